"""Each rule of the catalog rejects what breaks it, naming the field path and the rule.

The table of invalid events is built from the catalog (every required field of every
type, every enum, currency, integer, number, list and item field), plus hand-written
rows for the rules that are not one per field.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError as PydanticValidationError

from pipeline.signals import catalog
from pipeline.signals.catalog import FieldSpec, Format, Kind, Tier
from pipeline.signals.check import CheckOptions, process_record
from pipeline.signals.mapping import (
    MappedSignal,
    MappingOptions,
    idempotency_key,
    map_event,
    merge_repeated_products,
)
from pipeline.signals.outcomes import Problem, Reason, Rejection
from pipeline.signals.processor import EventProcessor
from pipeline.signals.validation import CURRENCY_CODES, ValidEvent, _validators, validate_event
from tests.spec_examples import full_event, minimal_event, minimal_item, sample_value

OPTIONS: Final = MappingOptions(default_app_key="default-app")
TIMESTAMP_FORMAT: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


@dataclass(frozen=True)
class Case:
    """One invalid event and the one problem it must be rejected with."""

    id: str
    signal_type: str
    change: Callable[[dict[str, Any]], None]
    field: str
    rule: str


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        event[key] = value

    return change


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        del event[key]

    return change


def _items(key: str, items: list[Any]) -> Callable[[dict[str, Any]], None]:
    return _set(key, items)


def _field_cases(signal_type: str, fs: FieldSpec) -> list[Case]:
    t, n = signal_type, fs.name
    cases: list[Case] = []

    def add(label: str, change: Callable[[dict[str, Any]], None], field: str, rule: str) -> None:
        cases.append(Case(f"{t}.{n}-{label}", t, change, field, rule))

    if fs.required:
        add("missing", _delete(n), n, "required")
        add("null", _set(n, None), n, "required")
    match fs.kind:
        case Kind.STRING:
            add("not-a-string", _set(n, 5), n, "must be a string")
            if fs.required:
                add("empty", _set(n, ""), n, "must not be empty")
            if fs.enum is not None:
                listed = ", ".join(fs.enum)
                add("enum", _set(n, "SIDEWAYS"), n, f"'SIDEWAYS' is not one of {listed}")
            if fs.format is Format.CURRENCY:
                add("currency", _set(n, "USX"), n, "'USX' is not an ISO 4217 code")
                add("currency-long", _set(n, "USDD"), n, "'USDD' is not an ISO 4217 code")
            if fs.max_length is not None:
                too_long = "x" * (fs.max_length + 1)
                add("too-long", _set(n, too_long), n, f"longer than {fs.max_length} characters")
        case Kind.NUMBER:
            for label, bad in (("nan", float("nan")), ("inf", float("inf"))):
                add(label, _set(n, bad), n, "must be a finite number")
            add("-inf", _set(n, float("-inf")), n, "must be a finite number")
            add("string", _set(n, "1.5"), n, "must be a number")
            add("bool", _set(n, True), n, "must be a number")
        case Kind.INTEGER:
            add("fraction", _set(n, 2.5), n, "must be an integer")
            add("float", _set(n, 2.0), n, "must be an integer")
            add("string", _set(n, "2"), n, "must be an integer")
            add("bool", _set(n, True), n, "must be an integer")
            if fs.minimum is not None:
                add("below-minimum", _set(n, fs.minimum - 1), n, f"must be at least {fs.minimum}")
        case Kind.BOOLEAN:
            add("string", _set(n, "true"), n, "must be true or false")
        case Kind.STRING_LIST:
            add("not-a-list", _set(n, "https://x"), n, "must be an array")
            add("element", _set(n, ["ok", 3]), f"{n}[1]", "must be a string")
        case Kind.CUSTOM_ATTRIBUTES:
            add("not-a-list", _set(n, {"name": "a"}), n, "must be an array")
            add("no-value", _set(n, [{"name": "a"}]), f"{n}[0].value", "required")
            extra = [{"name": "a", "value": "b", "kind": "c"}]
            add("extra", _set(n, extra), f"{n}[0].kind", "unknown field")
        case Kind.ITEMS:
            assert fs.items is not None
            good = minimal_item(fs.items)
            add("not-a-list", _set(n, good), n, "must be an array")
            add("item-not-object", _items(n, [good, "x"]), f"{n}[1]", "must be an object")
            add(
                "item-extra",
                _items(n, [{**good, "colour": "red"}]),
                f"{n}[0].colour",
                "unknown field",
            )
            for item_field in fs.items.fields:
                i = item_field.name
                if item_field.required:
                    partial = {k: v for k, v in good.items() if k != i}
                    add(f"item-{i}-missing", _items(n, [good, partial]), f"{n}[1].{i}", "required")
                if item_field.kind is Kind.INTEGER:
                    fraction = [good, {**good, i: 1.5}]
                    add(
                        f"item-{i}-fraction",
                        _items(n, fraction),
                        f"{n}[1].{i}",
                        "must be an integer",
                    )
                if item_field.kind is Kind.NUMBER:
                    nan = [{**good, i: float("nan")}]
                    add(f"item-{i}-nan", _items(n, nan), f"{n}[0].{i}", "must be a finite number")
                if item_field.format is Format.CURRENCY:
                    usx = [{**good, i: "USX"}]
                    add(f"item-{i}", _items(n, usx), f"{n}[0].{i}", "'USX' is not an ISO 4217 code")
    return cases


def _catalog_cases() -> list[Case]:
    cases: list[Case] = []
    for signal_type, spec in catalog.SIGNALS.items():
        for fs in spec.fields:
            cases.extend(_field_cases(signal_type, fs))
        cases.append(
            Case(
                f"{signal_type}-unknown-field",
                signal_type,
                _set("bogus", 1),
                "bogus",
                "unknown field",
            )
        )
    return cases


def _hand_cases() -> list[Case]:
    def identity(value: Any) -> Callable[[dict[str, Any]], None]:
        return _set("identifiableAttributes", value)

    return [
        Case("sessionId-missing", "pageView", _delete("sessionId"), "sessionId", "required"),
        Case(
            "sessionId-empty", "pageView", _set("sessionId", ""), "sessionId", "must not be empty"
        ),
        Case("eventTime-missing", "pageView", _delete("eventTime"), "eventTime", "required"),
        Case(
            "eventTime-not-iso",
            "pageView",
            _set("eventTime", "31/08/2025 08:29"),
            "eventTime",
            "'31/08/2025 08:29' is not an ISO 8601 date-time",
        ),
        Case(
            "eventTime-month-13",
            "order",
            _set("eventTime", "2025-13-01T00:00:00Z"),
            "eventTime",
            "'2025-13-01T00:00:00Z' is not an ISO 8601 date-time",
        ),
        Case(
            "eventTime-naive",
            "pageView",
            _set("eventTime", "2025-08-31T08:29:30"),
            "eventTime",
            "'2025-08-31T08:29:30' has no UTC offset (e.g. 2025-08-31T08:29:30.001Z)",
        ),
        Case(
            "eventTime-bool",
            "pageView",
            _set("eventTime", True),
            "eventTime",
            "must be an ISO 8601 date-time or epoch milliseconds",
        ),
        Case(
            "identity-unknown",
            "pageView",
            identity({"phone": "1"}),
            "identifiableAttributes.phone",
            "unknown field",
        ),
        Case(
            "identity-type",
            "pageView",
            identity({"email": 5}),
            "identifiableAttributes.email",
            "must be a string",
        ),
        Case(
            "identity-shape",
            "pageView",
            identity("a@b"),
            "identifiableAttributes",
            "must be an object",
        ),
        Case("eventId-type", "pageView", _set("eventId", 7), "eventId", "must be a string"),
        Case("appKey-type", "pageView", _set("appKey", ["k"]), "appKey", "must be a string"),
        Case(
            "signalType-mismatch",
            "pageView",
            _set("signalType", "order"),
            "signalType",
            "'order' does not match 'pageView'",
        ),
        Case(
            "dateAdded-T",
            "productView",
            _set("dateAdded", "2025-04-12T08:29:30.001"),
            "dateAdded",
            "'2025-04-12T08:29:30.001' does not match yyyy-MM-dd HH:mm:ss.SSS",
        ),
        Case(
            "dateAdded-no-millis",
            "productView",
            _set("dateAdded", "2025-04-12 08:29:30"),
            "dateAdded",
            "'2025-04-12 08:29:30' does not match yyyy-MM-dd HH:mm:ss.SSS",
        ),
        Case(
            "dateAdded-impossible-day",
            "productView",
            _set("dateAdded", "2025-02-30 08:29:30.001"),
            "dateAdded",
            "'2025-02-30 08:29:30.001' does not match yyyy-MM-dd HH:mm:ss.SSS",
        ),
        Case(
            # Unicode digits match a bare `\d`: the format is ASCII digits.
            "dateAdded-arabic-indic-digits",
            "productView",
            _set("dateAdded", "٢٠٢٥-04-12 08:29:30.001"),
            "dateAdded",
            "'٢٠٢٥-04-12 08:29:30.001' does not match yyyy-MM-dd HH:mm:ss.SSS",
        ),
        Case(
            "order-item-1-unitPrice",
            "order",
            _set(
                "orderedItems",
                [
                    {"productId": "A", "productName": "a", "unitPrice": 1.0},
                    {"productId": "B", "productName": "b"},
                ],
            ),
            "orderedItems[1].unitPrice",
            "required",
        ),
        Case(
            "order-item-quantity-zero",
            "order",
            _set(
                "orderedItems",
                [{"productId": "A", "productName": "a", "unitPrice": 1, "quantity": 0}],
            ),
            "orderedItems[0].itemQuantity",
            "must be at least 1",
        ),
        Case(
            "order-item-quantity-and-itemQuantity",
            "order",
            _set(
                "orderedItems",
                [
                    {
                        "productId": "A",
                        "productName": "a",
                        "unitPrice": 1,
                        "quantity": 1,
                        "itemQuantity": 1,
                    }
                ],
            ),
            "orderedItems[0].quantity",
            "unknown field",
        ),
        Case(
            "custom-attribute-empty-name",
            "order",
            _set("signalCustomAttributes", [{"name": "", "value": "v"}]),
            "signalCustomAttributes[0].name",
            "must not be empty",
        ),
    ]


CASES: Final = _catalog_cases() + _hand_cases()


def test_table_covers_every_type_and_required_field() -> None:
    ids = {c.id for c in CASES}
    for signal_type, spec in catalog.SIGNALS.items():
        for name in spec.required:
            assert f"{signal_type}.{name}-missing" in ids
    assert len(CASES) > 300


@pytest.mark.parametrize("signal_type", catalog.SIGNAL_TYPES)
def test_base_events_are_valid(signal_type: str) -> None:
    """The table's starting points pass, so each row's rejection is its change's doing."""
    for event in (minimal_event(signal_type), full_event(signal_type)):
        assert isinstance(validate_event(signal_type, event), ValidEvent)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_event_rejected_with_field_and_rule(case: Case) -> None:
    event = full_event(case.signal_type)
    case.change(event)
    outcome = validate_event(case.signal_type, event)
    assert isinstance(outcome, Rejection), outcome
    assert outcome.reason is Reason.VALIDATION
    assert outcome.problems == (Problem(case.field, case.rule),)
    assert outcome.field == case.field
    assert outcome.message == f"{case.field}: {case.rule}"


@pytest.mark.parametrize("signal_type", catalog.SIGNAL_TYPES)
def test_name_of_256_characters_passes(signal_type: str) -> None:
    event = {**minimal_event(signal_type), "name": "n" * 256}
    valid = validate_event(signal_type, event)
    assert isinstance(valid, ValidEvent)
    mapped = map_event(valid, OPTIONS)
    assert isinstance(mapped, MappedSignal)
    assert mapped.signal["signalContent"]["name"] == "n" * 256
    # 256 characters, not bytes: multi-byte characters count once.
    assert isinstance(validate_event(signal_type, {**event, "name": "é" * 256}), ValidEvent)


def test_unknown_signal_type() -> None:
    outcome = validate_event("pageview", minimal_event("pageView"))
    assert isinstance(outcome, Rejection)
    assert outcome.field == "signalType"
    assert outcome.problems[0].rule.startswith("'pageview' is not one of addToCart, ")


def test_several_problems_all_reported() -> None:
    event = {**minimal_event("order"), "currency": "USX", "orderId": "", "bogus": 1}
    outcome = validate_event("order", event)
    assert isinstance(outcome, Rejection)
    assert set(outcome.problems) == {
        Problem("currency", "'USX' is not an ISO 4217 code"),
        Problem("orderId", "must not be empty"),
        Problem("bogus", "unknown field"),
    }


@pytest.mark.parametrize("signal_type", catalog.SIGNAL_TYPES)
def test_null_optional_fields_are_absent_fields(signal_type: str) -> None:
    """The Avro form: every optional field present as None maps like the field left out."""
    nulls = {fs.name: None for fs in catalog.SIGNALS[signal_type].fields if not fs.required}
    event = minimal_event(signal_type)
    with_nulls = validate_event(signal_type, {**event, **nulls, "signalType": None})
    without = validate_event(signal_type, event)
    assert isinstance(with_nulls, ValidEvent) and isinstance(without, ValidEvent)
    assert map_event(with_nulls, OPTIONS) == map_event(without, OPTIONS)


def _decide(validator: Any, event: dict[str, Any]) -> Any:
    try:
        return validator.validate_python(event)
    except PydanticValidationError:
        return None


@pytest.mark.parametrize("signal_type", catalog.SIGNAL_TYPES)
def test_fast_and_strict_models_decide_alike(signal_type: str) -> None:
    """validate_event tries a model that ignores unknown keys (then compares sizes) before
    the strict one that names them: both decide every table case, with and without an
    unknown key, the same way."""
    models = _validators(signal_type)
    cases = [c for c in CASES if c.signal_type == signal_type]
    for case, extra in itertools.product([None, *cases], [{}, {"bogus": 1}]):
        event = {**full_event(signal_type), **extra}
        if case is not None:
            case.change(event)
        strict = _decide(models.strict, event)
        fast = _decide(models.fast, event)
        fast_accepts = fast is not None and len(fast) == len(event)
        assert fast_accepts == (strict is not None), (case, extra)
        assert fast is None or not fast_accepts or fast == strict
        if case is None or case.field != "signalType":  # checked before the models
            outcome = validate_event(signal_type, event)
            assert isinstance(outcome, ValidEvent) == (strict is not None)


_RULED: Final = [
    (t, fs)
    for t, spec in catalog.SIGNALS.items()
    for fs in spec.fields
    if fs.kind is Kind.STRING and (fs.enum or fs.format)
]


def _near_the_rule(fs: FieldSpec) -> st.SearchStrategy[str]:
    """Values on both sides of a string rule: allowed ones in any case, near misses."""
    if fs.format is Format.DATE_ADDED:
        digits = st.text("0123456789", min_size=1, max_size=4)
        parts = st.tuples(digits, digits, digits, digits, digits, digits, digits)
        return st.one_of(
            st.datetimes().map(lambda d: f"{d:%Y-%m-%d %H:%M:%S}.{d.microsecond // 1000:03d}"),
            parts.map(lambda p: "{}-{}-{} {}:{}:{}.{}".format(*p)),
            st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}\Z"),
            st.text(max_size=30),
        )
    allowed = sorted(fs.enum or CURRENCY_CODES)
    variants = st.sampled_from(allowed).flatmap(
        lambda v: st.sampled_from([v, v.lower(), v.swapcase(), f" {v}", f"{v}x", v[:-1]])
    )
    return st.one_of(variants, st.text(max_size=8))


@pytest.mark.parametrize(("signal_type", "fs"), _RULED, ids=lambda x: getattr(x, "name", x))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fast_and_strict_string_rules_decide_alike(
    signal_type: str, fs: FieldSpec, data: st.DataObject
) -> None:
    value = data.draw(_near_the_rule(fs))
    event = {**full_event(signal_type), fs.name: value}
    models = _validators(signal_type)
    assert _decide(models.fast, event) == _decide(models.strict, event), value


def test_currency_and_enums_are_canonicalised() -> None:
    event = {**minimal_event("error"), "errorType": "user", "effect": "NEGATIVE"}
    valid = validate_event("error", event)
    assert isinstance(valid, ValidEvent)
    assert valid.fields["errorType"] == "USER"
    assert valid.fields["effect"] == "negative"
    order = validate_event("order", {**minimal_event("order"), "currency": "gbp"})
    assert isinstance(order, ValidEvent)
    assert order.fields["currency"] == "GBP"


# --- mapping rejections ----------------------------------------------------------------


def _valid(signal_type: str, **changes: Any) -> ValidEvent:
    event = {**minimal_event(signal_type), **changes}
    valid = validate_event(signal_type, event)
    assert isinstance(valid, ValidEvent), valid
    return valid


@pytest.mark.parametrize(
    "identity",
    [None, {}, {"email": None, "sms": None}, {"contactKey": ""}],
    ids=["null", "empty", "all-null", "empty-string"],
)
def test_no_identifiable_attribute_rejected_unless_anonymous_allowed(identity: Any) -> None:
    valid = _valid("pageView", identifiableAttributes=identity)
    outcome = map_event(valid, OPTIONS)
    assert isinstance(outcome, Rejection)
    assert outcome.reason is Reason.VALIDATION
    assert outcome.field == "identifiableAttributes"
    assert "contactKey, email, sms, whatsapp" in outcome.message
    allowed = map_event(valid, MappingOptions(default_app_key="k", allow_anonymous=True))
    assert isinstance(allowed, MappedSignal)
    assert allowed.signal["identifiableAttributes"] == {}


def test_no_app_key_and_no_default_rejected() -> None:
    valid = _valid("pageView", appKey=None)
    outcome = map_event(valid, MappingOptions())
    assert isinstance(outcome, Rejection)
    assert outcome.field == "appKey"
    assert outcome.problems[0].rule.startswith("required")
    defaulted = map_event(valid, MappingOptions(default_app_key="fallback"))
    assert isinstance(defaulted, MappedSignal)
    assert defaulted.signal["appKey"] == "fallback"
    own = map_event(_valid("pageView", appKey="own"), MappingOptions(default_app_key="fallback"))
    assert isinstance(own, MappedSignal)
    assert own.signal["appKey"] == "own"


@pytest.mark.parametrize("signal_type", catalog.SIGNAL_TYPES)
def test_subscription_tier(signal_type: str) -> None:
    record = minimal_event(signal_type)
    pro = process_record(record, CheckOptions(OPTIONS, Tier.PRO))
    in_pro = signal_type in {"addToCart", "identification", "order"}
    if in_pro:
        assert isinstance(pro, MappedSignal)
    else:
        assert isinstance(pro, Rejection)
        assert pro.reason is Reason.SUBSCRIPTION
        assert pro.field == "signalType"
        assert pro.message == f"signalType: {signal_type!r} is not included in the Pro subscription"
    for tier in (Tier.PREMIUM, Tier.ULTIMATE):
        assert isinstance(process_record(record, CheckOptions(OPTIONS, tier)), MappedSignal)


def test_the_check_orders_tier_and_validation_as_run_does() -> None:
    """An invalid event of a type outside the tier: the same reason offline as in `run`.

    Both go through EventProcessor.process_record: the tier first (the event cannot be
    delivered whatever its fields), validation after.
    """
    record = {**minimal_event("pageView"), "url": None}
    outcome = process_record(record, CheckOptions(OPTIONS, Tier.PRO))
    run = EventProcessor(_Unused(), OPTIONS, Tier.PRO).process_record("pageView", record)
    assert isinstance(outcome, Rejection) and isinstance(run, Rejection)
    assert outcome.reason is run.reason is Reason.SUBSCRIPTION
    assert outcome.message == run.message
    in_tier = process_record(record, CheckOptions(OPTIONS, Tier.ULTIMATE))
    assert isinstance(in_tier, Rejection) and in_tier.reason is Reason.VALIDATION


class _Unused:
    def decode(self, value: bytes | None) -> Any:
        raise AssertionError("not decoding")


# --- normalisations ------------------------------------------------------------------


def _order_items(*items: dict[str, Any]) -> list[dict[str, Any]]:
    outcome = map_event(_valid("order", orderedItems=list(items)), OPTIONS)
    assert isinstance(outcome, MappedSignal)
    result: list[dict[str, Any]] = outcome.signal["signalContent"]["orderedItems"]
    return result


def test_three_identical_order_lines_become_one_with_quantity_3() -> None:
    line = {"productId": "P1", "productName": "Paint", "unitPrice": 39.99, "currency": "USD"}
    assert _order_items(line, line, line) == [{**line, "itemQuantity": 3}]
    # Explicit quantities add up; earlier-edition `quantity` counts the same way.
    counted = {**line, "itemQuantity": 2}
    assert _order_items(counted, {**line, "itemQuantity": 5}) == [{**line, "itemQuantity": 7}]
    v1 = {k: v for k, v in line.items()}
    assert _order_items({**v1, "quantity": 2}, {**v1, "quantity": 1}) == [
        {**line, "itemQuantity": 3}
    ]


def test_lines_of_one_product_at_different_prices_stay_apart() -> None:
    line = {"productId": "P1", "productName": "Paint", "unitPrice": 39.99}
    cheaper = {**line, "unitPrice": 29.99}
    discounted = {**line, "discount": 5.0}
    other = {**line, "productId": "P2"}
    assert _order_items(line, cheaper, line) == [{**line, "itemQuantity": 2}, cheaper]
    assert _order_items(line, discounted) == [line, discounted]
    assert _order_items(line, other) == [line, other]


def test_merge_keeps_first_line_order_and_does_not_mutate_input() -> None:
    a = {"productId": "A", "productName": "a", "unitPrice": 1.0, "itemQuantity": 1}
    b = {"productId": "B", "productName": "b", "unitPrice": 2.0}
    given = [a, b, copy.deepcopy(a)]
    before = copy.deepcopy(given)
    assert merge_repeated_products(given) == [{**a, "itemQuantity": 2}, b]
    assert given == before


def test_abandoned_items_are_not_merged() -> None:
    item = {"productId": "A", "productName": "a", "unitPrice": 1.0}
    outcome = map_event(_valid("cartAbandonment", abandonedItems=[item, item]), OPTIONS)
    assert isinstance(outcome, MappedSignal)
    assert outcome.signal["signalContent"]["abandonedItems"] == [item, item]


@pytest.mark.parametrize(("results", "effect"), [(0, "negative"), (1, "positive"), (9, "positive")])
def test_on_site_search_effect_positive_iff_results(results: int, effect: str) -> None:
    outcome = map_event(_valid("onSiteSearch", numberOfResults=results), OPTIONS)
    assert isinstance(outcome, MappedSignal)
    assert outcome.signal["signalContent"]["effect"] == effect
    # An explicit effect is never overridden.
    explicit = map_event(
        _valid("onSiteSearch", numberOfResults=results, effect="positive"), OPTIONS
    )
    assert isinstance(explicit, MappedSignal)
    assert explicit.signal["signalContent"]["effect"] == "positive"


@pytest.mark.parametrize(
    ("event_time", "timestamp"),
    [
        ("2025-08-31T10:29:30.001+02:00", "2025-08-31T08:29:30.001Z"),
        ("2025-08-31T01:29:30.5-07:00", "2025-08-31T08:29:30.500Z"),
        ("2025-01-01T00:30:00+05:30", "2024-12-31T19:00:00.000Z"),
        ("2025-08-31T08:29:30.001999Z", "2025-08-31T08:29:30.001Z"),
        ("2025-08-31T08:29:30Z", "2025-08-31T08:29:30.000Z"),
        (1756628970001, "2025-08-31T08:29:30.001Z"),
    ],
)
def test_signal_timestamp_is_utc_with_milliseconds(event_time: Any, timestamp: str) -> None:
    outcome = map_event(_valid("pageView", eventTime=event_time), OPTIONS)
    assert isinstance(outcome, MappedSignal)
    assert outcome.signal["signalContent"]["signalTimestamp"] == timestamp


def test_signal_timestamp_from_a_datetime() -> None:
    moment = datetime(2025, 8, 31, 8, 29, 30, 1000, tzinfo=UTC)
    outcome = map_event(_valid("pageView", eventTime=moment), OPTIONS)
    assert isinstance(outcome, MappedSignal)
    assert outcome.signal["signalContent"]["signalTimestamp"] == "2025-08-31T08:29:30.001Z"


@pytest.mark.parametrize(
    "event_time",
    ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "0999-06-01T00:00:00Z"],
)
def test_extreme_event_times_are_rejected_or_well_formed(event_time: str) -> None:
    """An event must never crash the data path: a Rejection, or a valid timestamp."""
    valid = validate_event("pageView", {**minimal_event("pageView"), "eventTime": event_time})
    if isinstance(valid, Rejection):
        assert valid.field == "eventTime"
        return
    outcome = map_event(valid, OPTIONS)  # raised OverflowError for the first two
    if isinstance(outcome, Rejection):
        assert outcome.field == "eventTime"
    else:
        assert TIMESTAMP_FORMAT.fullmatch(outcome.signal["signalContent"]["signalTimestamp"])


# --- idempotency keys ---------------------------------------------------------------


def _key(**changes: Any) -> str:
    outcome = map_event(_valid("pageView", **changes), OPTIONS)
    assert isinstance(outcome, MappedSignal)
    return outcome.idempotency_key


def test_idempotency_key_is_the_plain_event_id() -> None:
    assert _key(eventId="evt-42") == "evt-42"
    assert _key(eventId="S0000001-abc:0001/x=y+z~.") == "S0000001-abc:0001/x=y+z~."


@pytest.mark.parametrize(
    "event_id", ['has "quote"', "back\\slash", "spaces in id", "é-accent", "x" * 129, "tab\tid"]
)
def test_idempotency_key_hashes_ids_that_are_not_plain(event_id: str) -> None:
    key = _key(eventId=event_id)
    assert key == "h-" + hashlib.sha256(event_id.encode()).hexdigest()[:40]
    assert re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", key)  # printable, no `"` or `\`
    assert key == _key(eventId=event_id)


def test_idempotency_key_without_event_id_hashes_the_signal() -> None:
    valid = _valid("pageView", eventId=None)
    outcome = map_event(valid, OPTIONS)
    assert isinstance(outcome, MappedSignal)
    canonical = json.dumps(
        outcome.signal, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert outcome.idempotency_key == "c-" + hashlib.sha256(canonical.encode()).hexdigest()[:40]
    again = map_event(_valid("pageView", eventId=None), OPTIONS)
    assert isinstance(again, MappedSignal)
    assert again.idempotency_key == outcome.idempotency_key
    assert idempotency_key(None, outcome.signal) == idempotency_key("", outcome.signal)


def test_two_different_events_without_ids_get_different_keys() -> None:
    keys = {
        _key(eventId=None),
        _key(eventId=None, url="https://www.example.com/other"),
        _key(eventId=None, eventTime="2025-08-31T08:29:30.002Z"),
        _key(eventId=None, sessionId="sess-2"),
        _key(eventId=None, identifiableAttributes={"email": "other@example.com"}),
        _key(eventId=None, appKey="app-2"),
    }
    assert len(keys) == 6


def test_sample_value_helper_is_valid_for_every_field() -> None:
    """Guards the helper itself: each field's sample passes on its own."""
    for signal_type, spec in catalog.SIGNALS.items():
        for fs in spec.fields:
            event = {**minimal_event(signal_type), fs.name: sample_value(fs)}
            assert isinstance(validate_event(signal_type, event), ValidEvent), (signal_type, fs)
