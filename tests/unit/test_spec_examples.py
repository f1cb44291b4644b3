"""Every example of both editions of the specification maps to its documented signal.

The examples are read from the specification's text (``tests/spec_examples.py``), run
through ``validate_event`` and ``map_event``, and compared field by field with the
example. The only differences allowed are the documented normalisations, each
asserted explicitly below: enumeration case, the earlier edition's order item
``quantity`` -> ``itemQuantity``, category and effect defaults, signalTimestamp.
"""

from __future__ import annotations

import copy
import math
import re
from datetime import UTC, datetime
from typing import Any, Final

import pytest

from pipeline.signals import catalog
from pipeline.signals.catalog import FieldSpec, Kind
from pipeline.signals.mapping import MappedSignal, MappingOptions, map_event
from pipeline.signals.validation import ValidEvent, validate_event
from tests.spec_examples import CURRENT, EARLIER, SpecExample, all_examples, examples

#: The envelope given to the earlier edition's JSON examples, which have none.
DEFAULT_APP_KEY: Final = "test-default-app-key"
DEFAULT_IDENTITY: Final = {"contactKey": "TEST-CONTACT-1"}
DEFAULT_SESSION: Final = "TEST-SESSION-1"
#: eventTime of examples without signalTimestamp (the earlier edition's).
FIXED_TIME: Final = datetime(2025, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)
FIXED_TIMESTAMP: Final = "2025-03-04T05:06:07.890Z"
TIMESTAMP_FORMAT: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
OPTIONS: Final = MappingOptions(default_app_key=DEFAULT_APP_KEY)
#: Enumerations whose canonical spelling differs from some example's spelling.
CASE_FOLDED_ENUMS: Final = {
    "errorType": catalog.ERROR_TYPES,
    "interactionType": catalog.INTERACTION_TYPES,
    "abandonmentReason": catalog.ABANDONMENT_REASONS,
}

ALL: Final = all_examples()


def build_event(example: SpecExample) -> dict[str, Any]:
    """The clickstream event (JSON form) an example's producer would write."""
    signal = example.signal
    content = signal["signalContent"]
    event: dict[str, Any] = {
        "signalType": content["signalType"],
        "sessionId": signal.get("sessionId", DEFAULT_SESSION),
        "identifiableAttributes": signal.get("identifiableAttributes", DEFAULT_IDENTITY),
        "eventTime": content.get("signalTimestamp", FIXED_TIME.isoformat()),
    }
    if "appKey" in signal:
        event["appKey"] = signal["appKey"]
    event.update({k: v for k, v in content.items() if k not in ("signalType", "signalTimestamp")})
    return event


def mapped(example: SpecExample) -> dict[str, Any]:
    valid = validate_event(example.signal_type, build_event(example))
    assert isinstance(valid, ValidEvent), f"{example.id}: {valid}"
    result = map_event(valid, OPTIONS)
    assert isinstance(result, MappedSignal), f"{example.id}: {result}"
    return result.signal


def assert_same_value(path: str, got: Any, expected: Any) -> None:
    """Equal, numbers compared numerically (GraphQL literal 7 vs pipeline 7.0)."""
    if isinstance(expected, bool) or isinstance(got, bool):
        assert got is expected, path
    elif isinstance(expected, int | float):
        assert isinstance(got, int | float), path
        assert math.isclose(got, expected, rel_tol=0, abs_tol=0), f"{path}: {got} != {expected}"
    else:
        assert got == expected, f"{path}: {got!r} != {expected!r}"


def canonical(fs: FieldSpec, value: str) -> str:
    assert fs.enum is not None
    (match,) = (v for v in fs.enum if v.lower() == value.lower())
    return match


def assert_items(path: str, spec: FieldSpec, got: list[Any], expected: list[Any]) -> None:
    assert spec.items is not None
    renames = {i.v1_name: i.name for i in spec.items.fields if i.v1_name}
    assert len(got) == len(expected), path
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        want = {renames.get(k, k): v for k, v in e.items()}
        assert set(g) == set(want), f"{path}[{index}]"
        for key, value in want.items():
            assert_same_value(f"{path}[{index}].{key}", g[key], value)


def test_extraction_finds_every_example() -> None:
    current = examples(CURRENT)
    earlier = examples(EARLIER)
    assert [e.form for e in current] == ["mutation"] * 11
    assert {e.signal_type for e in current} == set(catalog.SIGNALS)
    v1_types = {t for t, s in catalog.SIGNALS.items() if s.in_v1}
    assert len(v1_types) == 9
    for form in ("mutation", "json"):
        found = [e.signal_type for e in earlier if e.form == form]
        assert sorted(found) == sorted(v1_types), form


def test_earlier_json_and_mutation_examples_agree() -> None:
    earlier = examples(EARLIER)
    by_form = {
        form: {e.signal_type: e.signal["signalContent"] for e in earlier if e.form == form}
        for form in ("json", "mutation")
    }
    assert by_form["json"] == by_form["mutation"]


@pytest.mark.parametrize("example", ALL, ids=lambda e: e.id)
def test_example_maps_field_by_field(example: SpecExample) -> None:
    out = mapped(example)
    signal = example.signal
    assert set(out) == {"appKey", "identifiableAttributes", "sessionId", "signalContent"}
    assert out["appKey"] == signal.get("appKey", DEFAULT_APP_KEY)
    assert out["identifiableAttributes"] == signal.get("identifiableAttributes", DEFAULT_IDENTITY)
    assert out["sessionId"] == signal.get("sessionId", DEFAULT_SESSION)

    spec = catalog.SIGNALS[example.signal_type]
    content = signal["signalContent"]
    got = out["signalContent"]
    for key, value in content.items():
        assert key in got, f"{key} dropped"
        if key in ("signalType", "signalTimestamp"):
            assert got[key] == value
            continue
        fs = spec.by_name[key]
        if fs.kind is Kind.ITEMS:
            assert_items(key, fs, got[key], value)
        elif fs.enum is not None:
            assert got[key] == canonical(fs, value)
        elif fs.kind is Kind.INTEGER:
            assert type(got[key]) is int and got[key] == value
        elif fs.kind is Kind.STRING_LIST:
            assert got[key] == value
        else:
            assert_same_value(key, got[key], value)

    # Whatever the example lacks is a documented default, nothing else.
    added = set(got) - set(content)
    assert added <= {"category", "effect", "signalTimestamp"}
    if "category" in added:
        assert got["category"] == "Behavior"
    if "effect" in added:
        assert got["effect"] == spec.suggested_effect
    if "signalTimestamp" in added:
        assert got["signalTimestamp"] == FIXED_TIMESTAMP
    assert TIMESTAMP_FORMAT.fullmatch(got["signalTimestamp"])


def test_enumeration_case_is_canonicalised() -> None:
    """The earlier edition writes `user` and `launch`; the pipeline sends USER, LAUNCH."""
    seen: dict[str, set[str]] = {}
    for example in ALL:
        content = example.signal["signalContent"]
        got = mapped(example)["signalContent"]
        for key, allowed in CASE_FOLDED_ENUMS.items():
            if key in content:
                assert got[key] == content[key].upper()
                assert got[key] in allowed
                seen.setdefault(key, set()).add(content[key])
    # Both spellings occur in the examples, so the normalisation was exercised.
    assert {"user", "USER"} <= seen["errorType"]
    assert {"launch", "LAUNCH"} <= seen["interactionType"]
    assert seen["abandonmentReason"] == {"EXCESSIVE_SCROLLING", "USER_ERRORS"}


def test_earlier_order_items_quantity_becomes_item_quantity() -> None:
    orders = [e for e in examples(EARLIER) if e.signal_type == "order"]
    assert len(orders) == 2
    for example in orders:
        items = example.signal["signalContent"]["orderedItems"]
        assert all("quantity" in i and "itemQuantity" not in i for i in items)
        got = mapped(example)["signalContent"]["orderedItems"]
        assert [i["itemQuantity"] for i in got] == [i["quantity"] for i in items] == [2, 1]
        assert all("quantity" not in i for i in got)


def test_category_and_effect_defaulted_for_cart_abandonment() -> None:
    (example,) = (e for e in examples(CURRENT) if e.signal_type == "cartAbandonment")
    content = example.signal["signalContent"]
    assert "category" not in content and "effect" not in content
    got = mapped(example)["signalContent"]
    assert got["category"] == "Behavior"
    # DECISION in the catalog: abandonment is a negative signal (browseAbandonment's
    # example sends `negative`).
    assert got["effect"] == "negative"


def test_signal_timestamp() -> None:
    for example in ALL:
        content = example.signal["signalContent"]
        got = mapped(example)["signalContent"]["signalTimestamp"]
        if example.edition == 2:
            assert got == content["signalTimestamp"]
        else:
            assert "signalTimestamp" not in content
            assert got == FIXED_TIMESTAMP


@pytest.mark.parametrize("example", examples(EARLIER), ids=lambda e: e.id)
def test_earlier_examples_map_to_the_current_format(example: SpecExample) -> None:
    got = mapped(example)["signalContent"]
    spec = catalog.SIGNALS[example.signal_type]
    allowed = {fs.name for fs in spec.fields} | {"signalType", "signalTimestamp"}
    assert set(got) <= allowed
    for fs in spec.fields:
        if fs.required:
            assert fs.name in got, fs.name
        if fs.items is not None and fs.name in got:
            item_names = {i.name for i in fs.items.fields}
            for item in got[fs.name]:
                assert set(item) <= item_names
                assert {i.name for i in fs.items.fields if i.required} <= set(item)


@pytest.mark.parametrize("example", examples(CURRENT), ids=lambda e: e.id)
def test_current_examples_map_exactly(example: SpecExample) -> None:
    """Nothing added or dropped: the output is the example, canonicalised."""
    expected = copy.deepcopy(example.signal)
    content = expected["signalContent"]
    spec = catalog.SIGNALS[example.signal_type]
    for key in CASE_FOLDED_ENUMS:
        if key in content:
            content[key] = canonical(spec.by_name[key], content[key])
    content.setdefault("category", "Behavior")
    if spec.suggested_effect is not None:
        content.setdefault("effect", spec.suggested_effect)
    assert mapped(example) == expected
