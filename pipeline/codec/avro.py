"""Wire formats: Avro events in Confluent Schema Registry framing or single-object encoding.

The writer schema comes from the framing (a registry id, or a CRC-64-AVRO fingerprint
of a schema in ``avro/``), or from the ``__value_schema_id`` record header when there is
one (a registry id or schema GUID; the value is then the bare body), as Confluent's
``dual_schema_id_deserializer`` decides; the reader schema is always the current
edition's record of the same full name, so earlier-edition events arrive in the current
shape through Avro schema resolution. Decoding returns a value (``Decoded`` or
``DecodeFailure``) and never puts the raw bytes in a message. It raises one thing only:
``SchemaRegistryUnavailable``, when the registry gives no definitive answer for a
record's schema id or GUID (an outage, a misaddressed URL, an answer it cannot read).
That is not the record's fault: the caller rewinds to it and retries. Only a registry's
own "not found" codes in a JSON body make an id unknown, and that answer expires
(``negative_ttl_s``).

Caches are bounded (least recently used out): decode plans by framing header, and failures
with an expiry, so random headers (garbage fingerprints, unknown ids) cost neither memory
without bound nor a registry call per record.

fastavro returns ``timestamp-millis`` fields as timezone-aware (UTC) datetimes.

fastavro is the reference. Where cavro is installed and known to give identical output
(``pipeline.codec.accelerated``: the generated schemas' types, either edition), cavro
reads bodies several times as fast; ``accelerate=False`` (PIPELINE_AVRO_DECODER=fastavro)
turns it off. Whatever cavro cannot read goes to fastavro, so failures are fastavro's.

This module is the decoder and its caches; framing.py has the wire headers and the
encoders, plans.py the plans and body reading, registry_answers.py what a registry's
answer means. Their public names are importable from here too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, Final
from uuid import UUID

from pipeline.codec.framing import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    VALUE_SCHEMA_ID_HEADER,
    crc64_fingerprint,
    encode_confluent,
    encode_single_object,
    schema_id_header,
    schema_id_header_problem,
)
from pipeline.codec.plans import (
    Decoded,
    DecodeFailure,
    Lane,
    Plan,
    SchemaStore,
    compile_lane,
    plan_for,
    read,
)
from pipeline.codec.registry_answers import (
    NOT_FOUND_CODES,
    RegistryClient,
    SchemaLookupRunning,
    SchemaRegistryUnavailable,
    answer_schema,
    forget,
    is_not_found,
    schema_label,
    short_cause,
)
from pipeline.codec.registry_lookups import Fetch, LookupPending
from pipeline.signals.mapping import MappedSignal, MappingOptions

__all__ = [
    "CONFLUENT_MAGIC",
    "DEFAULT_MAX_VALUE_BYTES",
    "FAILURE_CACHE_SIZE",
    "NEGATIVE_TTL_S",
    "NOT_FOUND_CODES",
    "PLAN_CACHE_SIZE",
    "SINGLE_OBJECT_MAGIC",
    "UNAVAILABLE_HOLD_S",
    "DecodeFailure",
    "Decoded",
    "EventDecoder",
    "RegistryClient",
    "SchemaRegistryUnavailable",
    "SchemaStore",
    "crc64_fingerprint",
    "encode_confluent",
    "encode_single_object",
]

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


def fetch_schema(registry: RegistryClient | None, schema_id: int | str) -> Any:
    """The registry's answer for an id or a GUID (a ``RegisteredSchema``-like object)."""
    assert registry is not None
    if isinstance(schema_id, int):
        return registry.get_schema(schema_id)
    return registry.get_schema_by_guid(schema_id)  # type: ignore[attr-defined]


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
        lookups: Callable[[Fetch], Fetch] | None = None,
    ) -> None:
        """``lookups`` wraps the registry look-up, e.g. ``BackgroundLookups`` (off the
        poll loop); None: asked on the caller's thread."""
        self._store = store
        self._accelerate = accelerate
        self._registry = registry
        fetch = partial(fetch_schema, registry)
        self._lookup: Fetch = fetch if lookups is None else lookups(fetch)
        self._max_value_bytes = max_value_bytes
        #: Plans by the exact header that names the writer schema (Confluent: magic and
        #: id, 5 bytes, framed or in a header; single-object: marker and fingerprint, 10
        #: bytes; a GUID header: magic 1 and the GUID, 17 bytes), so a known record costs
        #: one lookup. Least recently used first.
        self._plans: OrderedDict[bytes, Plan] = OrderedDict()
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
        #: Each lane's compiled lanes by header (``signal_lane``), bounded like plans.
        self._lanes: list[dict[bytes, Lane | None]] = []

    @property
    def cache_sizes(self) -> tuple[int, int]:
        """(plans, failures and ids held unavailable) kept: for tests and metrics."""
        return len(self._plans), len(self._failures) + len(self._unavailable)

    @property
    def lane_cache_sizes(self) -> list[int]:
        """Headers each lane has compiled (or found none for): for tests."""
        return [len(lanes) for lanes in self._lanes]

    def _plan_for(self, writer_schema: Any, key: str) -> Plan | DecodeFailure:
        return plan_for(
            self._store, self._parsed_readers, writer_schema, key, accelerate=self._accelerate
        )

    def _remember(self, header: bytes, found: Plan | DecodeFailure) -> Plan | DecodeFailure:
        """Cache a plan, or a failure until it expires; evict the least recently used."""
        if isinstance(found, Plan):
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

    def _single_object_plan(self, header: bytes) -> Plan | DecodeFailure:
        fp = header[2:10]
        key = f"fp:{fp[::-1].hex()}"
        schema = self._store.writers_by_fingerprint.get(fp)
        if schema is None:
            # The local store never changes: nothing to cache, a lookup is cheap.
            return DecodeFailure("unknown_schema", f"no schema with fingerprint {key}")
        return self._remembered_failure(header) or self._remember(
            header, self._plan_for(schema, key)
        )

    def _registry_plan(self, header: bytes) -> Plan | DecodeFailure:
        """The plan for a registry id (magic 0, 5 bytes) or schema GUID (magic 1, 17 bytes)."""
        schema_id: int | str
        if header[0] == CONFLUENT_MAGIC:
            schema_id = int.from_bytes(header[1:5], "big")
        else:
            schema_id = str(UUID(bytes=header[1:17]))
        if self._registry is None:
            return DecodeFailure(
                "unknown_schema",
                f"{schema_label(schema_id)}: a Schema Registry id but no Schema Registry "
                "configured",
            )
        failure = self._remembered_failure(header)
        if failure is not None:
            return failure
        held = self._unavailable.get(header)
        if held is not None:
            if self._clock() < held[1]:
                raise SchemaRegistryUnavailable(schema_id, held[0])
            del self._unavailable[header]
        if isinstance(schema_id, str) and not hasattr(self._registry, "get_schema_by_guid"):
            return DecodeFailure(
                "unknown_schema",
                f"{schema_label(schema_id)}: this registry client cannot look up GUIDs",
            )
        try:
            registered = self._lookup(schema_id)
            schema_type, text = registered.schema_type, registered.schema_str
        except LookupPending:  # asked off the loop: the record waits, nothing is remembered
            raise SchemaLookupRunning(schema_id, "no answer yet") from None
        except Exception as error:
            if is_not_found(error):
                return self._remember(
                    header,
                    DecodeFailure("unknown_schema", f"{schema_label(schema_id)} not found"),
                )
            raise self._hold(header, schema_id, short_cause(error)) from error
        if not isinstance(text, str):
            # A 200 whose body is no schema (a proxy's {}): no answer. The client cached
            # it; forget it so the retry asks again.
            forget(self._registry)
            cause = f"the answer carries no schema text ({type(text).__name__})"
            raise self._hold(header, schema_id, cause)
        plan = self._registry_answer_plan(schema_id, schema_type, text)
        if isinstance(plan, DecodeFailure):
            # The client keeps every answer it read, without bound; the answers that give
            # plans are few (real schemas), these are not (a registry answering any id).
            forget(self._registry)
        return self._remember(header, plan)

    def _registry_answer_plan(
        self, schema_id: int | str, schema_type: object, text: str
    ) -> Plan | DecodeFailure:
        """The registry's definitive answer for an id, as a plan or why it cannot be one."""
        schema = answer_schema(schema_id, schema_type, text)
        if isinstance(schema, DecodeFailure):
            return schema
        key = f"id:{schema_id}" if isinstance(schema_id, int) else f"guid:{schema_id}"
        return self._plan_for(schema, key)

    def _hold(self, header: bytes, schema_id: int | str, cause: str) -> SchemaRegistryUnavailable:
        """Remember that the registry gave no answer for this id; the error to raise."""
        self._unavailable[header] = (cause, self._clock() + self._unavailable_hold_s)
        if len(self._unavailable) > self._failure_cache_size:
            self._unavailable.popitem(last=False)
        return SchemaRegistryUnavailable(schema_id, cause)

    def decode(self, value: bytes | None, headers: Any = None) -> Decoded | DecodeFailure:
        """One Kafka record value to a record, or why it is not one.

        ``headers`` (confluent-kafka's ``Message.headers()``): a writer schema id in the
        ``__value_schema_id`` header decides over the value's framing, as in Confluent's
        ``dual_schema_id_deserializer``; the value is then the bare Avro body.
        Raises ``SchemaRegistryUnavailable`` (only) when the registry cannot answer.
        """
        if headers:
            raw = schema_id_header(headers)
            if raw is not None:
                return self._decode_by_header(value, raw)
        if type(value) is bytes and 0 < len(value) <= self._max_value_bytes:
            start = 5 if value[0] == CONFLUENT_MAGIC else 10
            header = value[:start]
            plan = self._plans.get(header)
            if plan is not None:
                self._plans.move_to_end(header)
                return read(value, start, plan)
        return self._decode(value)

    def signal_lane(
        self, mapping: MappingOptions, types: frozenset[str]
    ) -> Callable[[bytes | None, Any], MappedSignal | None] | None:
        """``lane(value, headers)``: the record's signal in one pass (``plans.compile_lane``)
        or None, and then ``decode`` (the regular path) decides. None: no lanes (cavro
        off). A lane is compiled the first time its header comes with a plan, so an
        unknown header always goes the regular way first (the registry, the failure
        caches); lanes are as bounded as plans."""
        if not self._accelerate:
            return None
        lanes: dict[bytes, Lane | None] = {}
        self._lanes.append(lanes)
        plans, store = self._plans, self._store
        limit, size = self._max_value_bytes, self._plan_cache_size

        # The last framed header that had a lane, and its lane: consecutive records
        # mostly share one, and then neither the header's copy nor a lookup is needed.
        # No value starts with 0xff (neither framing): the first record looks it up.
        last_header, last_start = b"\xff", 0
        last_lane: Lane = _no_signal

        def lane(value: bytes | None, headers: Any = None) -> MappedSignal | None:
            nonlocal last_header, last_lane, last_start
            if type(value) is not bytes or not 0 < len(value) <= limit:
                return None
            raw = schema_id_header(headers) if headers else None
            if raw is None:  # as decode(): the framing names the writer schema
                if value.startswith(last_header):
                    return last_lane(value, last_start)
                start = 5 if value[0] == CONFLUENT_MAGIC else 10
                header = value[:start]
            elif type(raw) is bytes:  # the header does, and the value is the bare body
                header, start = raw, 0
            else:
                return None
            read_signal = lanes.get(header)
            if read_signal is None:
                plan = plans.get(header)
                if plan is None or header in lanes:  # not known yet, or no lane
                    return None
                if len(lanes) >= size:
                    del lanes[next(iter(lanes))]  # the oldest: a memo, bounded like plans
                read_signal = lanes[header] = compile_lane(plan, store, mapping, types)
                if read_signal is None:
                    return None
            if raw is None:
                last_header, last_lane, last_start = header, read_signal, start
            return read_signal(value, start)

        return lane

    def _decode_by_header(self, value: bytes | None, raw: object) -> Decoded | DecodeFailure:
        """A bare Avro body whose writer schema the header names (id or GUID)."""
        if not isinstance(raw, bytes) or (plan := self._plans.get(raw)) is None:
            found = self._header_plan(raw)
            if isinstance(found, DecodeFailure):
                return DecodeFailure(found.reason, f"{_ID_HEADER}: {found.message}")
            plan = found
        else:  # the same entry as framed records with that id use
            self._plans.move_to_end(raw)
        refused = _refused(value, self._max_value_bytes)
        if refused is not None:
            return refused
        assert value is not None
        return read(value, 0, plan)

    def _header_plan(self, raw: object) -> Plan | DecodeFailure:
        problem = schema_id_header_problem(raw)
        if problem is not None:
            return DecodeFailure("undecodable", problem)
        assert isinstance(raw, bytes)
        return self._registry_plan(raw)

    def _decode(self, value: bytes | None) -> Decoded | DecodeFailure:
        """``decode`` the first time a header is seen, and for values it refuses."""
        refused = _refused(value, self._max_value_bytes)
        if refused is not None:
            return refused
        assert value is not None
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
        return read(value, start, plan)


_ID_HEADER: Final = f"header {VALUE_SCHEMA_ID_HEADER}"


def _no_signal(value: bytes, start: int) -> None:
    """A lane with no answer: the regular path decides."""
    return None


def _refused(value: bytes | None, max_value_bytes: int) -> DecodeFailure | None:
    """Why a value is not read at all (empty, over the limit); None: read it."""
    if not value:
        return DecodeFailure("undecodable", "empty value")
    if len(value) > max_value_bytes:
        return DecodeFailure(
            "undecodable", f"value of {len(value)} bytes exceeds the {max_value_bytes}-byte limit"
        )
    return None
