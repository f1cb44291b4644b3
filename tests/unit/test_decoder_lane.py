"""The codec's lane (bytes to a signal in one pass: cavro to record objects, time as
epoch milliseconds, the type's generated mapper) against the reference path (fastavro's
dict, then the fused or strict path): the same signal, to the byte of its JSON, or no
answer (None), and then the regular path decides. Never a signal the reference rejects.

Over every schema and edition in every framing, each rule of each type broken in turn,
random events from the catalog (hypothesis), third-party writer schemas, the fuzz
corpus, mutated encodings, truncated bodies and trailing bytes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from typing import Any, Final

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.codec.avro import EventDecoder, SchemaStore, encode_single_object
from pipeline.codec.framing import encode_header_id
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.signals import catalog
from pipeline.signals.catalog import Tier
from pipeline.signals.mapping import MappedSignal, MappingOptions
from pipeline.signals.outcomes import Rejection
from pipeline.signals.processor import EventProcessor
from tests.fuzz.hostile import CORPUS, avro_schema, editions, encode, registry, sample_records
from tests.fuzz.test_hostile_input import mutated
from tests.unit.test_decoder_differential import THIRD_PARTY_CHANGES, _written_by_third_party
from tests.unit.test_properties import _breaks, _full_event, _v1_form, event_strategy

STORE: Final = SchemaStore.from_directory(DEFAULT_AVRO_DIR)
OPTIONS: Final = (
    MappingOptions(default_app_key="lane-app"),
    MappingOptions(),
    MappingOptions(default_app_key="lane-app", allow_anonymous=True),
)
ALL_TYPES: Final = catalog.types_in_tier(Tier.ULTIMATE)
FUZZ: Final = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=os.environ.get("FUZZ_RANDOM") is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Pair:
    """A decoder with lanes (one per option set) beside the reference processors."""

    def __init__(self, client: Any, store: SchemaStore = STORE) -> None:
        self.decoder = EventDecoder(store, client)
        lanes = [self.decoder.signal_lane(o, ALL_TYPES) for o in OPTIONS]
        assert all(lane is not None for lane in lanes)
        self.lanes = lanes
        reference = EventDecoder(store, client, accelerate=False)
        self.references = [EventProcessor(reference, o) for o in OPTIONS]

    def check(self, value: bytes | None, headers: Any = None) -> list[MappedSignal | None]:
        """Each option set's lane result, asserted to agree with the reference."""
        with contextlib.suppress(Exception):  # the regular path learns the plan first
            self.decoder.decode(value, headers)
        results = []
        for lane, reference in zip(self.lanes, self.references, strict=True):
            assert lane is not None
            got = lane(value, headers)
            if got is not None:
                want = reference.process(value, headers)
                assert isinstance(want, MappedSignal), (want, got)
                assert (got.signal_type, got.idempotency_key) == (
                    want.signal_type,
                    want.idempotency_key,
                )
                assert orjson.dumps(got.signal) == orjson.dumps(want.signal)
            results.append(got)
        return results


PAIR: Final = Pair(registry()[0])


def _written(edition: int, signal_type: str, event: dict[str, Any]) -> bytes | None:
    """Single-object encoded with the edition's schema (in its form); None: the edition
    cannot hold it."""
    if edition == 1:
        event = _v1_form(signal_type, event)
    try:
        return encode(edition, signal_type, event, False)
    except (ValueError, TypeError, OverflowError):
        return None


@pytest.mark.parametrize("key", editions(), ids=lambda k: f"v{k[0]}-{k[1]}")
@pytest.mark.parametrize("framing", ["single-object", "confluent", "header id"])
def test_every_schema_and_edition_takes_the_lane(key: tuple[int, str], framing: str) -> None:
    record = sample_records()[key]
    headers = None
    value = encode(*key, record, framing == "confluent")
    if framing == "header id":
        headers = [("trace", b"x"), ("__value_schema_id", encode_header_id(registry()[1][key]))]
        value = value[10:]  # the bare body
    results = PAIR.check(value, headers)
    assert results[0] is not None, "a valid event must take the lane"
    for cut in (1, len(value) // 2):
        assert PAIR.check(value[:-cut], headers) == [None, None, None]
    for extra in range(1, 13):  # the end check: any trailing bytes leave the lane
        assert PAIR.check(value + bytes(range(extra)), headers) == [None, None, None]


@pytest.mark.parametrize(("edition", "signal_type"), editions())
def test_each_rule_broken_in_turn_leaves_the_lane(edition: int, signal_type: str) -> None:
    """The lane never makes a signal of an event the reference rejects (checked in
    ``Pair.check``), and makes the reference's signal of the valid ones."""
    taken = 0
    for name, broken in ((None, None), *_breaks(signal_type)):
        event = _full_event(signal_type)
        if name is not None:
            event[name] = broken
        value = _written(edition, signal_type, event)
        if value is not None:
            taken += PAIR.check(value)[0] is not None
    assert taken >= 1


@FUZZ
@given(st.sampled_from(editions()), st.data())
def test_random_catalog_events(key: tuple[int, str], data: st.DataObject) -> None:
    edition, signal_type = key
    event = data.draw(event_strategy(signal_type))
    if data.draw(st.booleans()):
        name, broken = data.draw(st.sampled_from(_breaks(signal_type)))
        event[name] = broken
    value = _written(edition, signal_type, event)
    if value is not None:
        PAIR.check(value)


@pytest.mark.parametrize("change", THIRD_PARTY_CHANGES)
def test_third_party_writer_schemas(change: str) -> None:
    client, value = _written_by_third_party(change)
    taken = any(Pair(client).check(value))  # without identity: anonymous ones only
    # an int writer field is not among the types cavro is tested on: the regular path
    assert taken == (change != "narrower-long")


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.bin")), ids=lambda p: p.name)
def test_fuzz_corpus(path: Any) -> None:
    PAIR.check(path.read_bytes())


@FUZZ
@given(mutated())
def test_mutated_encodings(value: bytes) -> None:
    PAIR.check(value)


def test_no_lane_for_a_type_outside_the_tier() -> None:
    client, _ = registry()
    decoder = EventDecoder(STORE, client)
    processor = EventProcessor(decoder, OPTIONS[0], Tier.PRO)
    premium = next(t for t in catalog.SIGNAL_TYPES if t not in catalog.types_in_tier(Tier.PRO))
    value = encode(2, premium, sample_records()[(2, premium)], False)
    for _ in range(2):  # the second time the plan is known: still no lane
        outcome = processor.process(value)
        assert isinstance(outcome, Rejection) and outcome.reason == "subscription"
    assert decoder.lane_cache_sizes == [1]


def test_fastavro_only_has_no_lane() -> None:
    decoder = EventDecoder(STORE, accelerate=False)
    assert decoder.signal_lane(OPTIONS[0], ALL_TYPES) is None


def test_no_lane_for_a_reader_schema_the_catalog_did_not_generate() -> None:
    """Record objects have exactly the reader's fields: an extra one would go unseen,
    where the strict path refuses it. Such a store takes the regular path."""
    readers = []
    for edition, schema in STORE_SCHEMAS:
        if edition == 2 and schema["name"] == "AddToCartEvent":
            schema = copy.deepcopy(schema)
            schema["fields"].append({"name": "extra", "type": ["null", "string"], "default": None})
        readers.append((edition, schema))
    store = SchemaStore(readers)
    pair = Pair(None, store)
    writer = next(s for e, s in readers if e == 2 and s["name"] == "AddToCartEvent")
    body = io.BytesIO()
    record = {**sample_records()[(2, "addToCart")], "extra": "x"}
    fastavro.schemaless_writer(body, fastavro.parse_schema(writer), record)
    value = encode_single_object(writer, record)
    assert value.endswith(body.getvalue())
    assert pair.check(value) == [None, None, None]
    outcome = pair.references[0].process(value)
    assert isinstance(outcome, Rejection) and "extra" in outcome.message
    # and an EventProcessor on that decoder gives the strict path's answer
    assert EventProcessor(pair.decoder, OPTIONS[0]).process(value) == outcome


STORE_SCHEMAS: Final = [
    (edition, avro_schema(edition, signal_type)) for edition, signal_type in editions()
]


def test_lanes_are_bounded_like_plans() -> None:
    decoder = EventDecoder(STORE, registry()[0], plan_cache_size=3)
    processor = EventProcessor(decoder, OPTIONS[0])
    for key in editions():
        value = encode(*key, sample_records()[key], True)
        assert isinstance(processor.process(value), MappedSignal)
        processor.process(value)  # the second time through the lane
        assert max(decoder.lane_cache_sizes) <= 3
    assert decoder.lane_cache_sizes == [3]


def test_a_mapper_that_fails_leaves_the_record_to_the_regular_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever goes wrong in the lane is not the lane's to decide (and never stops the
    consumer): the regular path gives the signal."""

    def broken(epoch_ms: int) -> str:
        raise RuntimeError("a bug in the lane")

    # only the lane's mapping formats epoch milliseconds (the regular path, datetimes)
    monkeypatch.setattr("pipeline.signals.fused.format_millis", broken)
    processor = EventProcessor(EventDecoder(STORE, registry()[0]), OPTIONS[0])
    value = encode(2, "addToCart", sample_records()[(2, "addToCart")], False)
    want = PAIR.references[0].process(value)
    assert isinstance(want, MappedSignal)
    for _ in range(2):  # the second time the lane is compiled and fails
        outcome = processor.process(value)
        assert isinstance(outcome, MappedSignal)
        assert orjson.dumps(outcome.signal) == orjson.dumps(want.signal)


def _string_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where the record holds a string (keys and list indexes)."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _string_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _string_paths(v, (*path, i))]
    return []


def _as_utf8(value: Any, bad: tuple[Any, ...], path: tuple[Any, ...] = ()) -> Any:
    """Every string as its UTF-8 bytes, the one at ``bad`` as bytes that are not UTF-8."""
    if isinstance(value, str):
        return b"ok\xff" if path == bad else value.encode()
    if isinstance(value, dict):
        return {k: _as_utf8(v, bad, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_utf8(v, bad, (*path, i)) for i, v in enumerate(value)]
    return value


@pytest.mark.parametrize(("edition", "signal_type"), editions())
def test_a_string_that_is_not_utf8_anywhere_leaves_the_lane(edition: int, signal_type: str) -> None:
    """The lane reads strings as bytes and decodes them itself: every one of them, so a
    body with any string that is not UTF-8 goes the regular way (fastavro's rejection)."""
    from pipeline.codec.accelerated import _as_bytes

    event = _full_event(signal_type)
    event["appKey"] = "app-1"
    event["identifiableAttributes"] = {n: f"{n}-1" for n in catalog.IDENTIFIABLE_ATTRIBUTES}
    for fs in catalog.SIGNALS[signal_type].fields:
        if fs.kind is catalog.Kind.CUSTOM_ATTRIBUTES:
            event[fs.name] = [{"name": "n", "value": "v"}]
        elif fs.kind is catalog.Kind.STRING_LIST:
            event[fs.name] = ["a", "b"]
    if edition == 1:
        event = _v1_form(signal_type, event)
    schema = avro_schema(edition, signal_type)
    valid = encode_single_object(schema, event)
    assert PAIR.check(valid)[0] is not None
    header, parsed = valid[:10], fastavro.parse_schema(schema)
    event = fastavro.schemaless_reader(io.BytesIO(valid[10:]), parsed, None)  # as written
    paths = _string_paths(event)
    assert len(paths) >= 9
    writer = fastavro.parse_schema(_as_bytes(schema))
    for bad in paths:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, writer, _as_utf8(event, bad))
        value = header + body.getvalue()
        assert PAIR.check(value) == [None, None, None], bad
        outcome = PAIR.references[0].process(value)
        assert isinstance(outcome, Rejection) and "UTF-8" in outcome.message, bad
