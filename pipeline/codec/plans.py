"""Decode plans: which reader schema a writer schema resolves to, and reading one body.

A plan is parsed once per writer schema; reading with it is the per-record work, cavro
first where it applies, fastavro (the reference) for the rest.

A plan of a signal type also gives a lane (``compile_lane``): a body straight to its
signal, read by cavro to a record object (strings as UTF-8 bytes) and mapped by the
type's generated mapper, in one generated function, for the records it is sure of.
What it is not sure of goes the regular way (decode to fastavro's dict, then the fused
or strict path), which decides and explains.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

from pipeline.codec.accelerated import FastRead, compile_reader, object_body_read
from pipeline.codec.framing import crc64_fingerprint, full_name
from pipeline.codec.schemas import EDITIONS, record_schema
from pipeline.signals import catalog
from pipeline.signals.fused import object_lane
from pipeline.signals.mapping import MappedSignal, MappingOptions
from pipeline.signals.processor import signal_type_of


# Not frozen: one per event, and a frozen dataclass's __init__ costs three times as
# much (object.__setattr__ per field). Nothing mutates it.
@dataclass(slots=True)
class Decoded:
    record_name: str  # the writer's full name, e.g. connect.signals.OrderEvent
    record: dict[str, Any]
    writer_key: str  # "id:<n>" or "fp:<hex>"


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    reason: Literal["undecodable", "unknown_schema"]
    message: str


class SchemaStore:
    """The local schemas: readers by full name, writers by fingerprint."""

    def __init__(self, schemas: list[tuple[int, dict[str, Any]]]) -> None:
        self.readers: dict[str, Any] = {}
        self.writers_by_fingerprint: dict[bytes, dict[str, Any]] = {}
        for edition, schema in schemas:
            self.writers_by_fingerprint[crc64_fingerprint(schema)] = schema
            if edition == max(e for e, _ in schemas):
                self.readers[full_name(schema)] = schema

    @classmethod
    def from_directory(cls, directory: Path) -> SchemaStore:
        """``<dir>/v<edition>/*.avsc``; the highest edition gives the reader schemas.

        The default directory absent (an installed wheel): the catalog's schemas.
        """
        from pipeline.codec.schemas import read_schemas

        return cls(read_schemas(directory))


@dataclass(frozen=True, slots=True)
class Plan:
    """How to read bodies written with one writer schema (parsed once, cached)."""

    record_name: str
    writer: Any
    reader: Any | None  # None: writer == reader, no resolution needed
    key: str
    fast: FastRead | None = None  # the accelerated reader, where it applies
    #: The writer schema as given, where the accelerated reader applies (for a lane).
    source: Any = None


def plan_for(
    store: SchemaStore,
    parsed_readers: dict[str, Any],
    writer_schema: Any,
    key: str,
    *,
    accelerate: bool,
) -> Plan | DecodeFailure:
    """A plan from any writer schema: whatever is wrong with it is a DecodeFailure.

    ``parsed_readers`` caches the parsed reader schemas by full name (the caller's).
    """
    try:
        name = full_name(writer_schema)
        reader = store.readers.get(name)
        if reader is None:
            return DecodeFailure("unknown_schema", f"no local reader schema for record {name!r}")
        writer = fastavro.parse_schema(writer_schema)
        same = to_parsing_canonical_form(writer_schema) == to_parsing_canonical_form(reader)
        if same:
            fast = compile_reader(writer_schema) if accelerate else None
            return Plan(name, writer, None, key, fast, writer_schema if fast else None)
        if name not in parsed_readers:
            parsed_readers[name] = fastavro.parse_schema(reader)
        fast = compile_reader(writer_schema, reader) if accelerate else None
        return Plan(name, writer, parsed_readers[name], key, fast, writer_schema if fast else None)
    except Exception as error:
        return DecodeFailure("unknown_schema", f"writer schema {key} unusable: {error}"[:300])


def read(value: bytes, start: int, plan: Plan) -> Decoded | DecodeFailure:
    fast = plan.fast
    if fast is not None:
        record = fast(value, start)
        if record is not None:
            return Decoded(plan.record_name, record, plan.key)
    return read_reference(value, start, plan)


def read_reference(value: bytes, start: int, plan: Plan) -> Decoded | DecodeFailure:
    """fastavro: every plan's fallback, and the only reader of resolved ones."""
    stream = io.BytesIO(value)
    stream.seek(start)
    try:
        record = fastavro.schemaless_reader(stream, plan.writer, plan.reader)
    except EOFError:
        return DecodeFailure("undecodable", f"truncated Avro body ({plan.key})")
    except SchemaResolutionError as error:
        # The writer's schema, not the bytes, is at fault: say how it breaks resolution.
        reason = str(error)[:200]
        return DecodeFailure(
            "unknown_schema", f"writer schema {plan.key} does not resolve to the reader: {reason}"
        )
    except UnicodeDecodeError:
        return DecodeFailure(
            "undecodable", f"malformed Avro body ({plan.key}): a string is not valid UTF-8"
        )
    except Exception as error:  # malformed data: fastavro raises many kinds
        kind = type(error).__name__
        return DecodeFailure(
            "undecodable",
            f"malformed Avro body ({plan.key}): the bytes do not follow the writer schema ({kind})",
        )
    if stream.tell() != len(value):
        extra = len(value) - stream.tell()
        return DecodeFailure("undecodable", f"{extra} trailing bytes after the record ({plan.key})")
    if not isinstance(record, dict):
        return DecodeFailure("undecodable", f"not a record ({plan.key})")
    return Decoded(plan.record_name, record, plan.key)


#: A body (``value[start:]``) to its signal in one pass, or None: not sure, or not a
#: body the lane reads (the regular path then decodes it and decides).
Lane = Callable[[bytes, int], "MappedSignal | None"]


def compile_lane(
    plan: Plan, store: SchemaStore, mapping: MappingOptions, types: frozenset[str]
) -> Lane | None:
    """The plan's lane, or None where there is none: cavro off or not applicable, a
    record that is not a signal type in ``types`` (the regular path drops or rejects
    it), or a reader schema other than the catalog's own current edition (the mapper
    reads record objects, which have exactly the reader's fields)."""
    signal_type = signal_type_of(plan.record_name)
    if plan.source is None or signal_type is None or signal_type not in types:
        return None
    reader = store.readers.get(plan.record_name)
    own = record_schema(catalog.SIGNALS[signal_type], EDITIONS[-1])
    if reader is None or to_parsing_canonical_form(reader) != to_parsing_canonical_form(own):
        return None
    body_read = object_body_read(plan.source, None if plan.reader is None else reader)
    if body_read is None:
        return None
    return object_lane(signal_type, mapping, *body_read)
