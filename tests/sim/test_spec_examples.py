"""The simulator against the specification's own examples, over HTTP.

Every example of the current edition is accepted, as the spec's literal mutation
text and in the variables form the pipeline sends. The earlier edition's examples
are accepted except exactly where the current edition differs (order items'
``quantity``, renamed ``itemQuantity``), and the required-field changes between the
editions are checked one by one.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Final

import pytest

from tests.sim.conftest import APP_KEY, SimClient, signal
from tests.spec_examples import CURRENT, EARLIER, examples, mutation_texts, spec_text

CURRENT_EXAMPLES: Final = examples(CURRENT)
EARLIER_EXAMPLES: Final = examples(EARLIER)
#: The earlier edition's JSON examples are signalContent alone: the envelope they get.
ENVELOPE: Final = {
    "appKey": APP_KEY,
    "identifiableAttributes": {"contactKey": "AAUN-132417508"},
    "sessionId": "OOII97671461464332a1111",
}


def as_signal(example_signal: dict[str, Any]) -> dict[str, Any]:
    return {**ENVELOPE, **copy.deepcopy(example_signal)}


def ids_and_errors(response: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    assert response.status_code == 200, response.text
    body = response.json()
    return body["data"]["createSignals"]["signalIds"], body.get("errors", [])


def test_the_current_edition_has_an_example_per_type() -> None:
    assert len(CURRENT_EXAMPLES) == 11
    assert {e.signal_type for e in CURRENT_EXAMPLES} == {
        "addToCart",
        "browseAbandonment",
        "cartAbandonment",
        "error",
        "identification",
        "onSiteSearch",
        "order",
        "pageView",
        "productConfiguration",
        "productView",
        "richMediaInteraction",
    }


@pytest.mark.parametrize("source", mutation_texts(spec_text(CURRENT)), ids=lambda s: s[60:110])
def test_current_mutation_text_is_accepted_as_written(sim: SimClient, source: str) -> None:
    response = sim.post(query=source)
    ids, errors = ids_and_errors(response)
    assert errors == []
    assert len(ids) == 1 and ids[0] is not None
    (recorded,) = sim.signals()
    assert recorded["signal"]["signalContent"]["signalType"] in source


def test_current_examples_accepted_in_the_variables_form_and_recorded_as_sent(
    sim: SimClient,
) -> None:
    signals = [copy.deepcopy(e.signal) for e in CURRENT_EXAMPLES]
    keys = [f"k-{i}" for i in range(len(signals))]
    ids, errors = ids_and_errors(sim.post(signals, signal_keys=keys, key="batch-1"))
    assert errors == []
    assert all(i is not None for i in ids) and len(set(ids)) == len(ids)
    recorded = sim.signals()
    assert [r["key"] for r in recorded] == keys
    assert [r["signal"] for r in recorded] == signals
    assert {r["batchKey"] for r in recorded} == {"batch-1"}


@pytest.mark.parametrize("example", EARLIER_EXAMPLES, ids=lambda e: e.id)
def test_earlier_examples_rejected_exactly_where_the_editions_differ(
    sim: SimClient, example: Any
) -> None:
    ids, errors = ids_and_errors(sim.post([as_signal(example.signal)]))
    if example.signal_type != "order":
        assert errors == [] and ids[0] is not None
        return
    # The only difference the earlier examples meet: order items' quantity is
    # itemQuantity now; each item's quantity is an unknown field, and nothing else.
    items = example.signal["signalContent"]["orderedItems"]
    assert ids == [None]
    assert [e["extensions"]["field"] for e in errors] == [
        f"signalContent.orderedItems[{i}].quantity" for i in range(len(items))
    ]
    assert all(e["path"][:3] == ["createSignals", "signals", 0] for e in errors)


def test_earlier_order_examples_accepted_once_quantity_is_renamed(sim: SimClient) -> None:
    orders = [e for e in EARLIER_EXAMPLES if e.signal_type == "order"]
    assert len(orders) == 2  # the mutation and the JSON example
    renamed = []
    for example in orders:
        candidate = as_signal(example.signal)
        for item in candidate["signalContent"]["orderedItems"]:
            item["itemQuantity"] = item.pop("quantity")
        renamed.append(candidate)
    ids, errors = ids_and_errors(sim.post(renamed))
    assert errors == [] and None not in ids


#: Required-field changes between the editions: (type, field, required now?).
EDITION_CHANGES: Final = [
    # category, name and effect: required in the earlier edition, optional now
    *((t, f, False) for t in ("addToCart", "error", "order") for f in ("category", "name")),
    ("pageView", "effect", False),
    # productView: currency and unitPrice were required, now optional
    ("productView", "currency", False),
    ("productView", "unitPrice", False),
    # productConfiguration: configurationType was required, now optional ...
    ("productConfiguration", "configurationType", False),
    # ... and currency was optional, now required
    ("productConfiguration", "currency", True),
    # error: errorIdentifier was required, now optional
    ("error", "errorIdentifier", False),
]


@pytest.mark.parametrize(("signal_type", "field", "required"), EDITION_CHANGES)
def test_required_fields_follow_the_current_edition(
    sim: SimClient, signal_type: str, field: str, required: bool
) -> None:
    without = signal(signal_type)
    without["signalContent"].pop(field, None)
    ids, errors = ids_and_errors(sim.post([without]))
    if required:
        assert ids == [None]
        assert [e["extensions"]["field"] for e in errors] == [f"signalContent.{field}"]
        assert errors[0]["message"] == f"signals[0].signalContent.{field}: required"
    else:
        assert errors == [] and ids[0] is not None


def table_field_names(text: str) -> set[str]:
    """Field names of the specification's field lists and tables."""
    # current edition: "name: String - ...", "productId(required): String - ..."
    listed = re.findall(
        r"([A-Za-z]+)(?:\((?:required|optional)\))?: (?:String|Number|Array|Boolean|Date)", text
    )
    # earlier edition: "| name | String ... |"
    tabled = re.findall(r"^([a-z][A-Za-z]+) \|", text, re.MULTILINE)
    return set(listed) | set(tabled)


@pytest.mark.parametrize("edition", [CURRENT, EARLIER])
def test_the_sdl_has_every_field_the_tables_list(edition: str) -> None:
    from connect_sim.simulator import SDL_PATH
    from graphql import build_schema

    schema = build_schema(SDL_PATH.read_text())
    fields = {
        name
        for type_name in ("SignalContentInput", "ItemInput", "CustomAttributeInput")
        for name in schema.type_map[type_name].fields  # type: ignore[attr-defined]
    }
    # The text glues each list entry to the sentence before it ("...GBP".itemQuantity):
    # a name is found when one of its suffixes is a field.
    missing = {
        name
        for name in table_field_names(spec_text(edition))
        if not any(name[i:] in fields for i in range(len(name)))
    }
    renamed = {"quantity"} if edition == EARLIER else set()  # itemQuantity now
    assert missing - {"values"} == renamed  # "Valid values: ..." is prose
