"""Wire formats: Avro events in Confluent Schema Registry framing or single-object encoding.

The writer schema comes from the framing (a registry id, or a CRC-64-AVRO fingerprint
of a schema in ``avro/``); the reader schema is always the current edition's record
of the same full name, so earlier-edition events arrive in the current shape through
Avro schema resolution. Decoding returns a value (``Decoded`` or ``DecodeFailure``) and
never puts the raw bytes in a message. It raises one thing only: ``SchemaRegistryUnavailable``,
when the registry gives no definitive answer for a framed record's schema id (an outage,
a misaddressed URL, an answer it cannot read). That is not the record's fault: the caller
rewinds to it and retries. Only a registry's own "not found" codes in a JSON body make an
id unknown, and that answer expires (``negative_ttl_s``).

Caches are bounded (least recently used out): decode plans by framing header, and failures
with an expiry, so random headers (garbage fingerprints, unknown ids) cost neither memory
without bound nor a registry call per record.

fastavro returns ``timestamp-millis`` fields as timezone-aware (UTC) datetimes.

fastavro is the reference. Where cavro is installed and known to give identical output
(``pipeline.codec.accelerated``: the generated schemas' types, either edition), cavro
reads bodies several times as fast; ``accelerate=False`` (PIPELINE_AVRO_DECODER=fastavro)
turns it off. Whatever cavro cannot read goes to fastavro, so failures are fastavro's.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, to_parsing_canonical_form

from pipeline.codec.accelerated import FastRead, compile_reader

CONFLUENT_MAGIC: Final = 0
SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
#: Values longer than this are refused before decoding. Decoded Python objects take
#: up to ~30x the encoded bytes (a 70 MB order of 1e6 tiny items took 1.5 GB and 49 s),
#: and a compressed batch can carry a value far beyond the broker's message size limit.
DEFAULT_MAX_VALUE_BYTES: Final = 1024 * 1024
#: Decode plans kept (one per writer schema seen: only schemas that resolve get one).
PLAN_CACHE_SIZE: Final = 1024
#: Failures kept per header (unknown ids, non-Avro schemas), each until it expires.
FAILURE_CACHE_SIZE: Final = 4096
#: How long a registry's "not found" (or a schema we cannot use) holds before asking again.
NEGATIVE_TTL_S: Final = 60.0
#: After no answer for an id, how long every record with it is held without asking again:
#: partitions retrying the same id (and their backoffs) cost one request per interval.
UNAVAILABLE_HOLD_S: Final = 1.0
#: A registry's own "not found" error codes (in a JSON body with a 404): schema 40403,
#: subject 40401 (Confluent, Karapace); confluent-kafka's in-process mock says 40400.
#: Anything else (an HTML 404 from an ingress, 5xx, -1 for an unreadable body) is no answer.
NOT_FOUND_CODES: Final = frozenset({40400, 40401, 40403})


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


class SchemaRegistryUnavailable(Exception):
    """No definitive answer from the registry for a schema id: hold the record and retry."""

    def __init__(self, schema_id: int, cause: str) -> None:
        super().__init__(f"Schema Registry unavailable for schema id {schema_id}: {cause}")
        self.schema_id = schema_id
        self.cause = cause

    def __reduce__(self) -> tuple[type[SchemaRegistryUnavailable], tuple[int, str]]:
        return type(self), (self.schema_id, self.cause)  # picklable (worker processes)


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
    fast: FastRead | None = None  # the accelerated reader, where it applies


class EventDecoder:
    """Decodes record values; caches one plan per writer schema (bounded)."""

    def __init__(
        self,
        store: SchemaStore,
        registry: RegistryClient | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        *,
        plan_cache_size: int = PLAN_CACHE_SIZE,
        failure_cache_size: int = FAILURE_CACHE_SIZE,
        negative_ttl_s: float = NEGATIVE_TTL_S,
        unavailable_hold_s: float = UNAVAILABLE_HOLD_S,
        clock: Callable[[], float] = time.monotonic,
        accelerate: bool = True,
    ) -> None:
        self._store = store
        self._accelerate = accelerate
        self._registry = registry
        self._max_value_bytes = max_value_bytes
        #: Plans by the exact header that names the writer schema (Confluent: magic and
        #: id, 5 bytes; single-object: marker and fingerprint, 10 bytes), so a known
        #: record costs one lookup. Least recently used first.
        self._plans: OrderedDict[bytes, _Plan] = OrderedDict()
        self._plan_cache_size = plan_cache_size
        #: Why a header has no plan, and until when that answer holds.
        self._failures: OrderedDict[bytes, tuple[DecodeFailure, float]] = OrderedDict()
        self._failure_cache_size = failure_cache_size
        self._negative_ttl_s = negative_ttl_s
        #: Why an id had no answer, and until when records with it are held unasked.
        self._unavailable: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._unavailable_hold_s = unavailable_hold_s
        self._clock = clock
        self._parsed_readers: dict[str, Any] = {}

    @property
    def cache_sizes(self) -> tuple[int, int]:
        """(plans, failures and ids held unavailable) kept: for tests and metrics."""
        return len(self._plans), len(self._failures) + len(self._unavailable)

    def _plan_for(self, writer_schema: Any, key: str) -> _Plan | DecodeFailure:
        """A plan from any writer schema: whatever is wrong with it is a DecodeFailure."""
        try:
            name = _full_name(writer_schema)
            reader = self._store.readers.get(name)
            if reader is None:
                return DecodeFailure(
                    "unknown_schema", f"no local reader schema for record {name!r}"
                )
            writer = fastavro.parse_schema(writer_schema)
            same = to_parsing_canonical_form(writer_schema) == to_parsing_canonical_form(reader)
            if same:
                fast = compile_reader(writer_schema) if self._accelerate else None
                return _Plan(name, writer, None, key, fast)
            if name not in self._parsed_readers:
                self._parsed_readers[name] = fastavro.parse_schema(reader)
            fast = compile_reader(writer_schema, reader) if self._accelerate else None
            return _Plan(name, writer, self._parsed_readers[name], key, fast)
        except Exception as error:
            return DecodeFailure("unknown_schema", f"writer schema {key} unusable: {error}"[:300])

    def _remember(self, header: bytes, found: _Plan | DecodeFailure) -> _Plan | DecodeFailure:
        """Cache a plan, or a failure until it expires; evict the least recently used."""
        if isinstance(found, _Plan):
            self._plans[header] = found
            if len(self._plans) > self._plan_cache_size:
                self._plans.popitem(last=False)
        else:
            self._failures[header] = (found, self._clock() + self._negative_ttl_s)
            if len(self._failures) > self._failure_cache_size:
                self._failures.popitem(last=False)
        return found

    def _remembered_failure(self, header: bytes) -> DecodeFailure | None:
        entry = self._failures.get(header)
        if entry is None:
            return None
        failure, expires = entry
        if self._clock() >= expires:
            del self._failures[header]
            return None
        self._failures.move_to_end(header)
        return failure

    def _single_object_plan(self, header: bytes) -> _Plan | DecodeFailure:
        fp = header[2:10]
        key = f"fp:{fp[::-1].hex()}"
        schema = self._store.writers_by_fingerprint.get(fp)
        if schema is None:
            # The local store never changes: nothing to cache, a lookup is cheap.
            return DecodeFailure("unknown_schema", f"no schema with fingerprint {key}")
        return self._remembered_failure(header) or self._remember(
            header, self._plan_for(schema, key)
        )

    def _registry_plan(self, header: bytes) -> _Plan | DecodeFailure:
        schema_id = int.from_bytes(header[1:5], "big")
        if self._registry is None:
            return DecodeFailure(
                "unknown_schema",
                f"schema id {schema_id}: Confluent framing but no Schema Registry configured",
            )
        failure = self._remembered_failure(header)
        if failure is not None:
            return failure
        held = self._unavailable.get(header)
        if held is not None:
            if self._clock() < held[1]:
                raise SchemaRegistryUnavailable(schema_id, held[0])
            del self._unavailable[header]
        try:
            registered = self._registry.get_schema(schema_id)
            schema_type, text = registered.schema_type, registered.schema_str
        except Exception as error:
            if _is_not_found(error):
                return self._remember(
                    header, DecodeFailure("unknown_schema", f"schema id {schema_id} not found")
                )
            raise self._hold(header, schema_id, _cause(error)) from error
        if not isinstance(text, str):
            # A 200 whose body is no schema (a proxy's {}): no answer. The client cached
            # it; forget it so the retry asks again.
            _forget(self._registry)
            cause = f"the answer carries no schema text ({type(text).__name__})"
            raise self._hold(header, schema_id, cause)
        plan = self._registry_answer_plan(schema_id, schema_type, text)
        if isinstance(plan, DecodeFailure):
            # The client keeps every answer it read, without bound; the answers that give
            # plans are few (real schemas), these are not (a registry answering any id).
            _forget(self._registry)
        return self._remember(header, plan)

    def _registry_answer_plan(
        self, schema_id: int, schema_type: object, text: str
    ) -> _Plan | DecodeFailure:
        """The registry's definitive answer for an id, as a plan or why it cannot be one."""
        kind = str(schema_type or "AVRO")[:40]
        if kind.upper() != "AVRO":
            return DecodeFailure(
                "unknown_schema", f"schema id {schema_id} is a {kind} schema, not Avro"
            )
        try:
            schema = json.loads(text)
        except ValueError:
            return DecodeFailure(
                "unknown_schema", f"schema id {schema_id}: the registered Avro schema is not JSON"
            )
        if not isinstance(schema, dict) or schema.get("type") != "record":
            return DecodeFailure(
                "unknown_schema",
                f"schema id {schema_id} is an Avro {_avro_kind(schema)} schema, not a record",
            )
        return self._plan_for(schema, f"id:{schema_id}")

    def _hold(self, header: bytes, schema_id: int, cause: str) -> SchemaRegistryUnavailable:
        """Remember that the registry gave no answer for this id; the error to raise."""
        self._unavailable[header] = (cause, self._clock() + self._unavailable_hold_s)
        if len(self._unavailable) > self._failure_cache_size:
            self._unavailable.popitem(last=False)
        return SchemaRegistryUnavailable(schema_id, cause)

    def decode(self, value: bytes | None) -> Decoded | DecodeFailure:
        """One Kafka record value to a record, or why it is not one.

        Raises ``SchemaRegistryUnavailable`` (only) when the registry cannot answer.
        """
        if type(value) is bytes and 0 < len(value) <= self._max_value_bytes:
            start = 5 if value[0] == CONFLUENT_MAGIC else 10
            header = value[:start]
            plan = self._plans.get(header)
            if plan is not None:
                self._plans.move_to_end(header)
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
    """Only the registry's own codes in a JSON body: never a bare 404 (an ingress page)."""
    return (
        getattr(error, "http_status_code", None) == 404
        and getattr(error, "error_code", None) in NOT_FOUND_CODES
    )


_USERINFO: Final = re.compile(r"//[^/@\s]*@")


def _cause(error: Exception) -> str:
    """A short cause for a log line: the kind and message, credentials in URLs masked."""
    text = _USERINFO.sub("//***@", f"{type(error).__name__}: {error}")
    return text if len(text) <= 300 else text[:297] + "..."


def _forget(registry: object) -> None:
    """Drop the client's cached answers (confluent-kafka's ``clear_caches``), if it has one."""
    clear = getattr(registry, "clear_caches", None)
    if callable(clear):
        # a best effort: failing, the retry sees the same answer and waits again
        with contextlib.suppress(Exception):
            clear()


def _avro_kind(schema: object) -> str:
    """``"string"``, ``array``, ``union``...: what a non-record Avro schema is."""
    if isinstance(schema, str):
        return json.dumps(schema[:40])
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return json.dumps(str(schema.get("type"))[:40])
    return type(schema).__name__


def _read(value: bytes, start: int, plan: _Plan) -> Decoded | DecodeFailure:
    fast = plan.fast
    if fast is not None:
        record = fast(value, start)
        if record is not None:
            return Decoded(plan.record_name, record, plan.key)
    return _read_reference(value, start, plan)


def _read_reference(value: bytes, start: int, plan: _Plan) -> Decoded | DecodeFailure:
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
