"""Property tests: events generated from the catalog validate, map to signals that
keep the catalog's own rules, and survive an Avro round trip with the v2 schemas; the
fused path for Avro records makes the strict path's signal or leaves the record to it.

The strategies are derived by walking ``catalog.SIGNALS`` (kind, enum, format,
minimum, max_length, items), so a new field in the catalog is covered here at once.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any, Final

import fastavro
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.connect.document import request_body
from pipeline.signals import catalog
from pipeline.signals.catalog import V1, FieldSpec, Format, ItemSpec, Kind
from pipeline.signals.fused import map_avro_record
from pipeline.signals.mapping import MappedSignal, MappingOptions, map_event
from pipeline.signals.validation import CURRENCY_CODES, ValidEvent, validate_event
from tests.spec_examples import sample_value

TIMESTAMP_FORMAT: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
KEY_FORMAT: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
OPTIONS: Final = MappingOptions(default_app_key="default-app")
INT32_MAX: Final = 2**31 - 1
SETTINGS: Final = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# --- strategies from the catalog ---------------------------------------------------------

_TEXT: Final = st.characters(exclude_categories=["Cs"])  # surrogates are not UTF-8


def _case_variants(value: str) -> st.SearchStrategy[str]:
    """Enumerations and currencies are accepted in any case."""
    return st.sampled_from([value, value.lower(), value.upper(), value.capitalize()])


def _string(fs: FieldSpec) -> st.SearchStrategy[str]:
    if fs.enum is not None:
        return st.sampled_from(fs.enum).flatmap(_case_variants)
    if fs.format is Format.CURRENCY:
        return st.sampled_from(sorted(CURRENCY_CODES)).flatmap(_case_variants)
    if fs.format is Format.DATE_ADDED:
        moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1))
        return moments.map(
            lambda d: d.strftime("%Y-%m-%d %H:%M:%S.") + f"{d.microsecond // 1000:03d}"
        )
    min_size = 1 if fs.required else 0
    if fs.max_length is not None:
        return st.one_of(
            st.text(_TEXT, min_size=min_size, max_size=20),
            st.text(_TEXT, min_size=fs.max_length - 3, max_size=fs.max_length),
        )
    return st.text(_TEXT, min_size=min_size, max_size=30)


def _number() -> st.SearchStrategy[float | int]:
    return st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=0, max_value=10_000, allow_nan=False).map(lambda x: round(x, 2)),
        st.integers(min_value=-(2**53), max_value=2**53),
    )


def value_strategy(fs: FieldSpec) -> st.SearchStrategy[Any]:
    match fs.kind:
        case Kind.STRING:
            return _string(fs)
        case Kind.NUMBER:
            return _number()
        case Kind.INTEGER:
            low = fs.minimum if fs.minimum is not None else -(2**31)
            return st.integers(min_value=low, max_value=INT32_MAX)
        case Kind.BOOLEAN:
            return st.booleans()
        case Kind.STRING_LIST:
            return st.lists(st.text(_TEXT, max_size=30), max_size=3)
        case Kind.CUSTOM_ATTRIBUTES:
            pair = st.fixed_dictionaries(
                {
                    "name": st.text(_TEXT, min_size=1, max_size=15),
                    "value": st.text(_TEXT, max_size=15),
                }
            )
            return st.lists(pair, max_size=3)
        case Kind.ITEMS:
            assert fs.items is not None
            return st.lists(item_strategy(fs.items), max_size=4)
    raise AssertionError(fs.kind)


def _fields(specs: tuple[FieldSpec, ...]) -> st.SearchStrategy[dict[str, Any]]:
    required = {fs.name: value_strategy(fs) for fs in specs if fs.required}
    optional = {
        fs.name: st.one_of(st.none(), value_strategy(fs)) for fs in specs if not fs.required
    }
    return st.fixed_dictionaries(required, optional=optional)


def item_strategy(item: ItemSpec) -> st.SearchStrategy[dict[str, Any]]:
    # Items are full objects in Avro (absent fields are null), so null means absent.
    return _fields(item.fields).map(lambda d: {k: v for k, v in d.items() if v is not None})


def _event_time() -> st.SearchStrategy[datetime]:
    """Millisecond precision (Avro timestamp-millis), any UTC offset, 2000-2099.

    The bounds are local times: the upper one stays a day clear of validation's
    2100-01-01T00:00Z limit whatever the offset.
    """
    offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(
        lambda m: timezone(timedelta(minutes=m))
    )
    moments = st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 30), timezones=offsets
    )
    return moments.map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


def _identity() -> st.SearchStrategy[dict[str, str | None]]:
    value = st.text(_TEXT, min_size=1, max_size=30)
    attributes = {k: st.one_of(st.none(), value) for k in catalog.IDENTIFIABLE_ATTRIBUTES}
    return st.sampled_from(catalog.IDENTIFIABLE_ATTRIBUTES).flatmap(
        lambda key: st.fixed_dictionaries({**attributes, key: value})
    )


def envelope_strategy() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "eventId": st.one_of(st.none(), st.text(_TEXT, min_size=1, max_size=40)),
            "sessionId": st.text(_TEXT, min_size=1, max_size=40),
            "identifiableAttributes": _identity(),
            "appKey": st.one_of(st.none(), st.text(_TEXT, min_size=1, max_size=30)),
            "eventTime": _event_time(),
        }
    )


def event_strategy(signal_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """An Avro-form event (no signalType key) of one type."""
    spec = catalog.SIGNALS[signal_type]
    return st.builds(
        lambda env, content: {**env, **content}, envelope_strategy(), _fields(spec.fields)
    )


TYPED_EVENTS: Final = st.sampled_from(catalog.SIGNAL_TYPES).flatmap(
    lambda t: st.tuples(st.just(t), event_strategy(t))
)


# --- the catalog's rules on a mapped signal ---------------------------------------------


def _check_value(path: str, fs: FieldSpec, value: Any) -> None:
    assert value is not None, path
    match fs.kind:
        case Kind.STRING:
            assert isinstance(value, str), path
            if fs.enum is not None:
                assert value in fs.enum, path
            if fs.format is Format.CURRENCY:
                assert value == value.upper() and value in CURRENCY_CODES, path
            if fs.max_length is not None:
                assert len(value) <= fs.max_length, path
            if fs.required:
                assert value, path
        case Kind.NUMBER:
            assert type(value) is float, path
        case Kind.INTEGER:
            assert type(value) is int, path
            if fs.minimum is not None:
                assert value >= fs.minimum, path
        case Kind.BOOLEAN:
            assert type(value) is bool, path
        case Kind.STRING_LIST:
            assert all(isinstance(v, str) for v in value), path
        case Kind.CUSTOM_ATTRIBUTES:
            assert all(set(v) == {"name", "value"} for v in value), path
        case Kind.ITEMS:
            assert fs.items is not None
            by_name = {i.name: i for i in fs.items.fields}
            for index, item in enumerate(value):
                for name in (i.name for i in fs.items.fields if i.required):
                    assert name in item, f"{path}[{index}].{name}"
                for name, item_value in item.items():
                    _check_value(f"{path}[{index}].{name}", by_name[name], item_value)


def assert_signal_keeps_catalog_rules(signal_type: str, mapped: MappedSignal) -> None:
    spec = catalog.SIGNALS[signal_type]
    signal = mapped.signal
    assert set(signal) == {"appKey", "identifiableAttributes", "sessionId", "signalContent"}
    assert signal["appKey"] and signal["sessionId"]
    assert signal["identifiableAttributes"]
    assert set(signal["identifiableAttributes"]) <= set(catalog.IDENTIFIABLE_ATTRIBUTES)
    content = signal["signalContent"]
    assert content["signalType"] == signal_type
    assert TIMESTAMP_FORMAT.fullmatch(content["signalTimestamp"])
    assert content["category"] in catalog.CATEGORIES
    for name in spec.required:
        assert name in content, name
    for name, value in content.items():
        if name not in ("signalType", "signalTimestamp"):
            _check_value(name, spec.by_name[name], value)
    for fs in spec.fields:
        if fs.items is not None and fs.items.merge_repeated_products and fs.name in content:
            keys = [
                (i["productId"], i["unitPrice"], i.get("discount"), i.get("currency"))
                for i in content[fs.name]
            ]
            assert len(keys) == len(set(keys)), "repeated products are merged"
    assert KEY_FORMAT.fullmatch(mapped.idempotency_key)
    json.loads(request_body([signal]))  # finite numbers only, valid JSON


def _quantities(items: list[dict[str, Any]] | None) -> int:
    return sum(i.get("itemQuantity") or i.get("quantity") or 1 for i in items or [])


@SETTINGS
@given(TYPED_EVENTS)
def test_generated_events_validate_and_map_within_the_rules(
    typed: tuple[str, dict[str, Any]],
) -> None:
    signal_type, event = typed
    valid = validate_event(signal_type, event)
    assert isinstance(valid, ValidEvent), valid
    mapped = map_event(valid, OPTIONS)
    assert isinstance(mapped, MappedSignal), mapped
    assert_signal_keeps_catalog_rules(signal_type, mapped)
    content = mapped.signal["signalContent"]
    # Merging repeated products keeps the total quantity.
    if signal_type == "order":
        assert _quantities(content.get("orderedItems")) == _quantities(event.get("orderedItems"))
    # The instant is kept, in UTC.
    stamp = datetime.strptime(content["signalTimestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert stamp.replace(tzinfo=UTC) == event["eventTime"]


@SETTINGS
@given(TYPED_EVENTS)
def test_json_form_validates_to_the_same_event(typed: tuple[str, dict[str, Any]]) -> None:
    """The offline check's JSON form (ISO eventTime, signalType) equals the Avro form."""
    signal_type, event = typed
    as_json = json.loads(
        json.dumps(
            {**event, "signalType": signal_type, "eventTime": event["eventTime"].isoformat()}
        )
    )
    left = validate_event(signal_type, event)
    right = validate_event(signal_type, as_json)
    assert isinstance(left, ValidEvent) and isinstance(right, ValidEvent)
    assert map_event(left, OPTIONS) == map_event(right, OPTIONS)


# --- Avro round trip with the current edition's schemas ----------------------------------

AVRO_V2: Final = Path(__file__).resolve().parents[2] / "avro" / "v2"


@cache
def _v2_schema(signal_type: str) -> Any:
    path = AVRO_V2 / f"{catalog.SIGNALS[signal_type].record_name}.avsc"
    assert path.is_file(), f"{path} is missing: the v2 Avro schemas are not checked in"
    return fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")), named_schemas={})


def _without_nulls(value: Any) -> Any:
    """Avro writes every field: absent and null are the same thing there."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@SETTINGS
@given(TYPED_EVENTS)
def test_avro_round_trip_validates_to_the_same_event(typed: tuple[str, dict[str, Any]]) -> None:
    signal_type, event = typed
    schema = _v2_schema(signal_type)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, event)
    decoded = fastavro.schemaless_reader(io.BytesIO(buffer.getvalue()), schema, schema)
    assert isinstance(decoded, dict)
    assert "signalType" not in decoded
    before = validate_event(signal_type, event)
    after = validate_event(signal_type, decoded)
    assert isinstance(before, ValidEvent), before
    assert isinstance(after, ValidEvent), after
    assert after.signal_type == before.signal_type
    assert _without_nulls(after.fields) == _without_nulls(before.fields)
    assert map_event(after, OPTIONS) == map_event(before, OPTIONS)


# --- the fused path holds to the strict one -----------------------------------------------

AVRO: Final = AVRO_V2.parent
#: Every type in each edition it exists in (the earlier one lacks the abandonment types).
EDITIONS: Final = [
    (t, edition)
    for t, spec in catalog.SIGNALS.items()
    for edition in (1, 2)
    if edition == 2 or spec.in_v1
]


@cache
def _schema(edition: int, signal_type: str) -> Any:
    path = AVRO / f"v{edition}" / f"{catalog.SIGNALS[signal_type].record_name}.avsc"
    return fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")), named_schemas={})


def _broken(fs: FieldSpec) -> list[Any]:
    """Values of the field's Avro type that break one of its catalog rules (None for a
    required field: a schema where it is nullable, productConfiguration's currency,
    lets it through)."""
    return [None, *_broken_values(fs)] if fs.required else _broken_values(fs)


def _broken_values(fs: FieldSpec) -> list[Any]:
    match fs.kind:
        case Kind.STRING:
            values: list[Any] = ["" if fs.required else None]
            if fs.max_length is not None:
                values.append("x" * (fs.max_length + 1))
            if fs.enum is not None:
                values += ["bogus", ""]
            if fs.format is Format.CURRENCY:
                values += ["", "US", "usdx", "ZZZ"]
            if fs.format is Format.DATE_ADDED:
                values += ["2024-02-30 10:00:00.000", "2024-01-01T10:00:00.000", "soon"]
            return values
        case Kind.NUMBER:
            return [float("nan"), float("inf"), -float("inf")]
        case Kind.INTEGER:
            low = fs.minimum if fs.minimum is not None else -(2**31)
            return [low - 1, INT32_MAX + 1, 2**62]
        case Kind.CUSTOM_ATTRIBUTES:
            return [[{"name": "", "value": "v"}]]
    return [None]


def _full_item(item: ItemSpec) -> dict[str, Any]:
    return {fs.name: sample_value(fs) for fs in item.fields}


@cache
def _breaks(signal_type: str) -> tuple[tuple[str, Any], ...]:
    """(field, value) pairs that each break one rule of the type: a content field, an
    item's field, or the envelope (empty session, time out of range, no identity, an
    empty appKey)."""
    pairs: list[tuple[str, Any]] = [
        ("sessionId", ""),
        ("appKey", ""),
        ("eventTime", datetime(1969, 12, 31, 23, 59, tzinfo=UTC)),
        ("eventTime", datetime(2100, 1, 1, tzinfo=UTC)),
        ("identifiableAttributes", {"email": ""}),
    ]
    for fs in catalog.SIGNALS[signal_type].fields:
        pairs += [(fs.name, value) for value in _broken(fs)]
        if fs.items is not None:
            for i in fs.items.fields:
                pairs += [(fs.name, [{**_full_item(fs.items), i.name: v}]) for v in _broken(i)]
    return tuple(pairs)


def _full_event(signal_type: str) -> dict[str, Any]:
    """Every field of the type set to a valid value, in the Avro form."""
    spec = catalog.SIGNALS[signal_type]
    event: dict[str, Any] = {
        "eventId": "e-1",
        "sessionId": "s-1",
        "identifiableAttributes": {"email": "a@example.com"},
        "appKey": None,
        "eventTime": datetime(2025, 8, 31, 8, 29, 30, 1000, tzinfo=UTC),
    }
    for fs in spec.fields:
        event[fs.name] = [_full_item(fs.items)] if fs.items else sample_value(fs)
    return event


def _v1_form(signal_type: str, event: dict[str, Any]) -> dict[str, Any]:
    """The event as an earlier-edition producer writes it: that edition's item names,
    and a value for what that edition required."""
    event = dict(event)
    for fs in catalog.SIGNALS[signal_type].fields:
        if fs.v1 is V1.REQUIRED and event.get(fs.name) is None:
            event[fs.name] = sample_value(fs)
        if fs.items is not None and event.get(fs.name):
            renames = {i.name: i.v1_name for i in fs.items.fields if i.v1_name}
            event[fs.name] = [{renames.get(k, k): v for k, v in i.items()} for i in event[fs.name]]
    return event


def _avro_round_trip(signal_type: str, edition: int, event: dict[str, Any]) -> dict[str, Any]:
    """Written with the edition's schema, read with the current one (as the codec does)."""
    writer = _schema(edition, signal_type)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, writer, event)
    buffer.seek(0)
    record = fastavro.schemaless_reader(buffer, writer, _schema(2, signal_type))
    assert isinstance(record, dict)
    return record


@SETTINGS
@given(st.sampled_from(EDITIONS), st.data())
def test_fused_path_makes_the_strict_paths_signal_or_leaves_it_the_record(
    typed: tuple[str, int], data: st.DataObject
) -> None:
    """Same signal, or both reject (the fused path returns None, the strict one explains),
    over every type in both editions, half the events with one rule broken."""
    signal_type, edition = typed
    event = data.draw(event_strategy(signal_type))
    if data.draw(st.booleans()):
        name, value = data.draw(st.sampled_from(_breaks(signal_type)))
        event[name] = value
    options = data.draw(
        st.sampled_from([OPTIONS, MappingOptions(), MappingOptions(allow_anonymous=True)])
    )
    if edition == 1:
        event = _v1_form(signal_type, event)
    try:
        record = _avro_round_trip(signal_type, edition, event)
    except (ValueError, TypeError):
        assume(False)  # a null the edition has no room for: the decoder never yields it
    _assert_fused_matches_strict(signal_type, record, options)


def _assert_fused_matches_strict(
    signal_type: str, record: dict[str, Any], options: MappingOptions
) -> bool:
    """True when the strict path accepts (and the fused one made the same signal)."""
    valid = validate_event(signal_type, record)
    strict = map_event(valid, options) if isinstance(valid, ValidEvent) else valid
    fused = map_avro_record(signal_type, record, options)
    if isinstance(strict, MappedSignal):
        assert fused == strict
        assert list(fused.signal["signalContent"]) == list(strict.signal["signalContent"])
        return True
    assert fused is None, strict
    return False


@pytest.mark.parametrize(("signal_type", "edition"), EDITIONS)
def test_fused_path_rejects_every_broken_rule_the_strict_one_does(
    signal_type: str, edition: int
) -> None:
    """Every rule of the type broken in turn (the table, not a sample), on a full event."""
    accepted = rejected = 0
    for name, value in ((None, None), *_breaks(signal_type)):
        event = _full_event(signal_type)
        if name is not None:
            event[name] = value
        if edition == 1:
            event = _v1_form(signal_type, event)
        try:
            record = _avro_round_trip(signal_type, edition, event)
        except (ValueError, TypeError):
            continue  # a null the edition has no room for: the decoder never yields it
        for options in (OPTIONS, MappingOptions()):
            if _assert_fused_matches_strict(signal_type, record, options):
                accepted += 1
            else:
                rejected += 1
    assert accepted and rejected > len(_breaks(signal_type)) // 2, (accepted, rejected)
