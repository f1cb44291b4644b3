"""Property tests: events generated from the catalog validate, map to signals that
keep the catalog's own rules, and survive an Avro round trip with the v2 schemas.

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.connect.document import request_body
from pipeline.signals import catalog
from pipeline.signals.catalog import FieldSpec, Format, ItemSpec, Kind
from pipeline.signals.mapping import MappedSignal, MappingOptions, map_event
from pipeline.signals.validation import CURRENCY_CODES, ValidEvent, validate_event

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
