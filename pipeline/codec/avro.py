"""Wire formats: Avro events in Confluent Schema Registry framing or single-object encoding.

The writer schema comes from the framing (a registry id, or a CRC-64-AVRO fingerprint
of a schema in ``avro/``); the reader schema is always the current edition's record
of the same full name, so earlier-edition events arrive in the current shape through
Avro schema resolution. Decoding returns a value (``Decoded`` or ``DecodeFailure``),
never raises, and never puts the raw bytes in a message.

fastavro returns ``timestamp-millis`` fields as timezone-aware (UTC) datetimes.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, to_parsing_canonical_form

CONFLUENT_MAGIC: Final = 0
SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
#: Values longer than this are refused before decoding. Decoded Python objects take
#: up to ~30x the encoded bytes (a 70 MB order of 1e6 tiny items took 1.5 GB and 49 s),
#: and a compressed batch can carry a value far beyond the broker's message size limit.
DEFAULT_MAX_VALUE_BYTES: Final = 1024 * 1024


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


class RegistryClient(Protocol):
    def get_schema(self, schema_id: int) -> Any: ...


def _full_name(schema: dict[str, Any]) -> str:
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def crc64_fingerprint(schema: dict[str, Any]) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of the schema's canonical form.

    fastavro's hex digest already lists the bytes in that (little-endian) order, as
    Apache Avro's ``SchemaNormalization.parsingFingerprint`` and its single-object
    encoders write them; reading it as a number and packing it again would reverse it.
    """
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


class SchemaStore:
    """The local schemas: readers by full name, writers by fingerprint."""

    def __init__(self, schemas: list[tuple[int, dict[str, Any]]]) -> None:
        self.readers: dict[str, Any] = {}
        self.writers_by_fingerprint: dict[bytes, dict[str, Any]] = {}
        for edition, schema in schemas:
            self.writers_by_fingerprint[crc64_fingerprint(schema)] = schema
            if edition == max(e for e, _ in schemas):
                self.readers[_full_name(schema)] = schema

    @classmethod
    def from_directory(cls, directory: Path) -> SchemaStore:
        """``<dir>/v<edition>/*.avsc``; the highest edition gives the reader schemas.

        The default directory absent (an installed wheel): the catalog's schemas.
        """
        from pipeline.codec.schemas import read_schemas

        return cls(read_schemas(directory))


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to read bodies written with one writer schema (parsed once, cached)."""

    record_name: str
    writer: Any
    reader: Any | None  # None: writer == reader, no resolution needed
    key: str


class EventDecoder:
    """Decodes record values; caches one plan per writer schema."""

    def __init__(
        self,
        store: SchemaStore,
        registry: RegistryClient | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self._store = store
        self._registry = registry
        self._max_value_bytes = max_value_bytes
        #: Plans (or why there is none) by the exact header that names the writer
        #: schema (Confluent: magic and id, 5 bytes; single-object: marker and
        #: fingerprint, 10 bytes), so a known record costs one lookup.
        self._plans: dict[bytes, _Plan | DecodeFailure] = {}
        self._parsed_readers: dict[str, Any] = {}

    def _plan_for(self, writer_schema: dict[str, Any], key: str) -> _Plan | DecodeFailure:
        name = _full_name(writer_schema)
        reader = self._store.readers.get(name)
        if reader is None:
            return DecodeFailure("unknown_schema", f"no local reader schema for record {name!r}")
        try:
            writer = fastavro.parse_schema(writer_schema)
            same = to_parsing_canonical_form(writer_schema) == to_parsing_canonical_form(reader)
            if same:
                return _Plan(name, writer, None, key)
            if name not in self._parsed_readers:
                self._parsed_readers[name] = fastavro.parse_schema(reader)
            return _Plan(name, writer, self._parsed_readers[name], key)
        except Exception as error:
            return DecodeFailure("unknown_schema", f"writer schema {key} unusable: {error}")

    def _single_object_plan(self, header: bytes) -> _Plan | DecodeFailure:
        plan = self._plans.get(header)
        if plan is None:
            fp = header[2:10]
            schema = self._store.writers_by_fingerprint.get(fp)
            key = f"fp:{fp[::-1].hex()}"
            if schema is None:
                plan = DecodeFailure("unknown_schema", f"no schema with fingerprint {key}")
            else:
                plan = self._plan_for(schema, key)
            self._plans[header] = plan
        return plan

    def _registry_plan(self, header: bytes) -> _Plan | DecodeFailure:
        plan = self._plans.get(header)
        if plan is None:
            schema_id = int.from_bytes(header[1:5], "big")
            key = f"id:{schema_id}"
            if self._registry is None:
                return DecodeFailure(
                    "unknown_schema",
                    f"schema id {schema_id}: Confluent framing but no Schema Registry configured",
                )
            try:
                registered = self._registry.get_schema(schema_id)
                schema = json.loads(registered.schema_str)
            except Exception as error:
                # Not cached: a registry outage must not turn into permanent failures.
                if _is_not_found(error):
                    plan = DecodeFailure("unknown_schema", f"schema id {schema_id} not found")
                    self._plans[header] = plan
                    return plan
                raise
            plan = self._plan_for(schema, key)
            self._plans[header] = plan
        return plan

    def decode(self, value: bytes | None) -> Decoded | DecodeFailure:
        """One Kafka record value to a record, or why it is not one."""
        if type(value) is bytes and 0 < len(value) <= self._max_value_bytes:
            start = 5 if value[0] == CONFLUENT_MAGIC else 10
            plan = self._plans.get(value[:start])
            if type(plan) is _Plan:
                return _read(value, start, plan)
        return self._decode(value)

    def _decode(self, value: bytes | None) -> Decoded | DecodeFailure:
        """``decode`` the first time a header is seen, and for values it refuses."""
        if not value:
            return DecodeFailure("undecodable", "empty value")
        if len(value) > self._max_value_bytes:
            return DecodeFailure(
                "undecodable",
                f"value of {len(value)} bytes exceeds the {self._max_value_bytes}-byte limit",
            )
        if value[0] == CONFLUENT_MAGIC:
            if len(value) < 5:
                return DecodeFailure("undecodable", "truncated Confluent header")
            start = 5
            plan = self._registry_plan(bytes(value[:start]))
        elif value[:2] == SINGLE_OBJECT_MAGIC:
            if len(value) < 10:
                return DecodeFailure("undecodable", "truncated single-object header")
            start = 10
            plan = self._single_object_plan(bytes(value[:start]))
        else:
            return DecodeFailure(
                "undecodable",
                f"unknown framing: first byte 0x{value[0]:02x} is neither Confluent magic 0x00 "
                "nor single-object marker C3 01",
            )
        if isinstance(plan, DecodeFailure):
            return plan
        return _read(value, start, plan)


def _is_not_found(error: Exception) -> bool:
    code = getattr(error, "http_status_code", None) or getattr(error, "error_code", None)
    return code in (404, 40403) or "not found" in str(error).lower()


def _read(value: bytes, start: int, plan: _Plan) -> Decoded | DecodeFailure:
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


#: Writer schemas kept parsed: by content, and the last few objects (first in, first
#: out; no JSON dump on the hot path). Both bounded: fresh dicts per event grow neither.
WRITER_CACHE_SIZE: Final = 256
_BY_OBJECT: OrderedDict[int, tuple[dict[str, Any], Any, bytes]] = OrderedDict()
_BY_OBJECT_SIZE: Final = 64


@lru_cache(maxsize=WRITER_CACHE_SIZE)
def _parsed(canonical_json: str) -> tuple[Any, bytes]:
    schema = json.loads(canonical_json)
    return fastavro.parse_schema(schema), crc64_fingerprint(schema)


def _writer(schema: dict[str, Any]) -> tuple[Any, bytes]:
    """The parsed schema and its fingerprint."""
    cached = _BY_OBJECT.get(id(schema))
    # the entry keeps the object alive, so a matching id is this very object
    if cached is not None and cached[0] is schema:
        return cached[1], cached[2]
    parsed, fp = _parsed(json.dumps(schema, sort_keys=True, separators=(",", ":")))
    _BY_OBJECT[id(schema)] = (schema, parsed, fp)
    if len(_BY_OBJECT) > _BY_OBJECT_SIZE:
        _BY_OBJECT.popitem(last=False)
    return parsed, fp


def _body(parsed: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


def encode_single_object(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Avro single-object encoding: C3 01, the CRC-64-AVRO fingerprint, the body."""
    parsed, fp = _writer(schema)
    return SINGLE_OBJECT_MAGIC + fp + _body(parsed, record)


def encode_confluent(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Confluent Schema Registry framing: magic 0, the schema id (big-endian), the body."""
    parsed, _ = _writer(schema)
    return bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big") + _body(parsed, record)
