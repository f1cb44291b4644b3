"""One invalid signal per rule, each rejected with its batch index and field.

Every case is sent at index 2 of a batch between valid signals, so the error must
name index 2 (message, path and extensions) while its neighbours are accepted and
recorded. Both request forms are exercised: JSON variables and the spec's inline
GraphQL literals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import pytest

from tests.sim.conftest import SimClient, signal

Signal = dict[str, Any]


@dataclass(frozen=True)
class Case:
    rule: str
    make: Callable[[], Signal]
    field: str  # the field path inside the signal
    message: str  # a part of the error message


def content(signal_type: str, **fields: Any) -> Callable[[], Signal]:
    return lambda: signal(signal_type, **fields)


def without(signal_type: str, field: str) -> Callable[[], Signal]:
    def make() -> Signal:
        s = signal(signal_type)
        del s["signalContent"][field]
        return s

    return make


def envelope(**fields: Any) -> Callable[[], Signal]:
    def make() -> Signal:
        s = signal("pageView")
        for key, value in fields.items():
            if value is ...:
                del s[key]
            else:
                s[key] = value
        return s

    return make


ITEM: Final = {"productId": "P-1", "productName": "Paint", "unitPrice": 9.5}

CASES: Final = [
    Case(
        "unknown signalType",
        content("pageView", signalType="pageVisit"),
        "signalContent.signalType",
        "unknown signalType 'pageVisit'",
    ),
    *(
        Case(f"required: {t}.{f}", without(t, f), f"signalContent.{f}", "required")
        for t, f in [
            ("addToCart", "currency"),
            ("addToCart", "itemQuantity"),
            ("addToCart", "productId"),
            ("addToCart", "productName"),
            ("addToCart", "unitPrice"),
            ("browseAbandonment", "currency"),
            ("cartAbandonment", "abandonedCartValue"),
            ("error", "errorText"),
            ("error", "errorType"),
            ("identification", "identifierName"),
            ("identification", "identifierValue"),
            ("onSiteSearch", "numberOfResults"),
            ("onSiteSearch", "searchTerm"),
            ("order", "orderId"),
            ("pageView", "url"),
            ("productConfiguration", "currency"),
            ("productView", "productId"),
            ("richMediaInteraction", "mediaId"),
        ]
    ),
    Case("required: empty string", content("pageView", url=""), "signalContent.url", "required"),
    Case(
        "required: signalType",
        without("pageView", "signalType"),
        "signalContent.signalType",
        "required",
    ),
    Case(
        "required: order item field",
        content("order", orderedItems=[ITEM, {"productId": "P-2", "productName": "Brush"}]),
        "signalContent.orderedItems[1].unitPrice",
        "required",
    ),
    Case(
        "required: abandoned item field",
        content("browseAbandonment", abandonedItems=[{"productName": "x", "unitPrice": 1}]),
        "signalContent.abandonedItems[0].productId",
        "required",
    ),
    Case(
        "type: Int as string",
        content("addToCart", itemQuantity="2"),
        "signalContent.itemQuantity",
        "must be Int",
    ),
    Case(
        "type: Int as float",
        content("onSiteSearch", numberOfResults=2.5),
        "signalContent.numberOfResults",
        "must be Int",
    ),
    Case(
        "type: Int out of 32 bits",
        content("onSiteSearch", numberOfResults=2**31),
        "signalContent.numberOfResults",
        "must be Int",
    ),
    Case(
        "type: Float as string",
        content("addToCart", unitPrice="39.99"),
        "signalContent.unitPrice",
        "must be Float",
    ),
    Case(
        "type: Boolean as string",
        content("identification", identificationFromLogin="true"),
        "signalContent.identificationFromLogin",
        "must be Boolean",
    ),
    Case(
        "type: String as number",
        content("order", orderId=2937),
        "signalContent.orderId",
        "must be String",
    ),
    Case(
        "type: list item",
        content("addToCart", productUrls=["https://x", 7]),
        "signalContent.productUrls[1]",
        "must be String",
    ),
    Case(
        "type: object as string",
        content("order", orderedItems=["P-1"]),
        "signalContent.orderedItems[0]",
        "must be an object",
    ),
    Case(
        "type: item field",
        content("order", orderedItems=[{**ITEM, "itemQuantity": "3"}]),
        "signalContent.orderedItems[0].itemQuantity",
        "must be Int",
    ),
    Case(
        "type: custom attribute without value",
        content("pageView", signalCustomAttributes=[{"name": "x"}]),
        "signalContent.signalCustomAttributes[0].value",
        "required",
    ),
    Case(
        "unknown field",
        content("pageView", colour="red"),
        "signalContent.colour",
        "unknown field of SignalContentInput",
    ),
    Case(
        "unknown item field",
        content("order", orderedItems=[{**ITEM, "quantity": 2}]),
        "signalContent.orderedItems[0].quantity",
        "unknown field of ItemInput",
    ),
    Case(
        "unknown envelope field",
        envelope(contactKey="C-1"),
        "contactKey",
        "unknown field of SignalInput",
    ),
    Case(
        "enum: effect",
        content("pageView", effect="neutral"),
        "signalContent.effect",
        "not a valid effect",
    ),
    Case(
        "enum: category",
        content("pageView", category="Commerce"),
        "signalContent.category",
        "not a valid category",
    ),
    Case(
        "enum: errorType",
        content("error", errorType="User"),
        "signalContent.errorType",
        "not a valid errorType",
    ),
    Case(
        "enum: interactionType",
        content("richMediaInteraction", interactionType="play"),
        "signalContent.interactionType",
        "not a valid interactionType",
    ),
    Case(
        "enum: abandonmentReason",
        content("cartAbandonment", abandonmentReason="BORED"),
        "signalContent.abandonmentReason",
        "not a valid abandonmentReason",
    ),
    Case(
        "enum: identifierName",
        content("identification", identifierName="phone"),
        "signalContent.identifierName",
        "not a valid identifierName",
    ),
    Case(
        "currency: not ISO 4217",
        content("order", currency="USX"),
        "signalContent.currency",
        "not an ISO 4217 code",
    ),
    Case(
        "currency: lower case",
        content("addToCart", currency="usd"),
        "signalContent.currency",
        "not an ISO 4217 code",
    ),
    Case(
        "currency: in an item",
        content("order", orderedItems=[{**ITEM, "currency": "EURO"}]),
        "signalContent.orderedItems[0].currency",
        "not an ISO 4217 code",
    ),
    Case(
        "name: 257 characters",
        content("pageView", name="n" * 257),
        "signalContent.name",
        "longer than 256 characters",
    ),
    Case(
        "signalTimestamp: no zone",
        content("pageView", signalTimestamp="2025-08-31T08:29:30.001"),
        "signalContent.signalTimestamp",
        "not an ISO 8601 date-time",
    ),
    Case(
        "signalTimestamp: month 13",
        content("pageView", signalTimestamp="2025-13-31T08:29:30Z"),
        "signalContent.signalTimestamp",
        "not an ISO 8601 date-time",
    ),
    Case(
        "signalTimestamp: words",
        content("pageView", signalTimestamp="yesterday"),
        "signalContent.signalTimestamp",
        "not an ISO 8601 date-time",
    ),
    Case(
        "signalTimestamp: epoch millis",
        content("pageView", signalTimestamp="1756628970001"),
        "signalContent.signalTimestamp",
        "not an ISO 8601 date-time",
    ),
    Case(
        "dateAdded: ISO 8601 instead",
        content("productView", dateAdded="2025-04-12T08:29:30.001Z"),
        "signalContent.dateAdded",
        "yyyy-MM-dd HH:mm:ss.SSS",
    ),
    Case(
        "dateAdded: February 30",
        content("productView", dateAdded="2025-02-30 08:29:30.001"),
        "signalContent.dateAdded",
        "yyyy-MM-dd HH:mm:ss.SSS",
    ),
    Case("appKey: missing", envelope(appKey=...), "appKey", "required"),
    Case("appKey: null", envelope(appKey=None), "appKey", "required"),
    Case("appKey: unknown", envelope(appKey="someone-elses-app"), "appKey", "unknown appKey"),
    Case(
        "identity: empty",
        envelope(identifiableAttributes={}),
        "identifiableAttributes",
        "at least one identifiable attribute",
    ),
    Case(
        "identity: empty strings",
        envelope(identifiableAttributes={"email": ""}),
        "identifiableAttributes",
        "at least one identifiable attribute",
    ),
    Case(
        "identity: missing",
        envelope(identifiableAttributes=...),
        "identifiableAttributes",
        "at least one identifiable attribute",
    ),
    Case("signalContent: missing", envelope(signalContent=...), "signalContent", "required"),
]


def path_of(field: str) -> list[str | int]:
    """``a.b[1].c`` as a GraphQL error path tail: ["a", "b", 1, "c"]."""
    parts: list[str | int] = []
    for part in field.replace("[", ".[").split("."):
        parts.append(int(part[1:-1]) if part.startswith("[") else part)
    return parts


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rule)
def test_each_rule_rejects_the_signal_at_its_index(sim: SimClient, case: Case) -> None:
    batch = [signal("pageView"), signal("order"), case.make(), signal("addToCart")]
    response = sim.post(batch, signal_keys=["k0", "k1", "k2", "k3"])
    assert response.status_code == 200, response.text
    body = response.json()
    ids = body["data"]["createSignals"]["signalIds"]
    assert ids[2] is None and None not in (ids[0], ids[1], ids[3])
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "INVALID_SIGNAL", "index": 2, "field": case.field}
    assert error["path"] == ["createSignals", "signals", 2, *path_of(case.field)]
    assert error["message"].startswith(f"signals[2].{case.field}: ")
    assert case.message in error["message"]
    assert [r["key"] for r in sim.signals()] == ["k0", "k1", "k3"]
    assert sim.stats()["rejected"] == 1


def test_the_boundaries_are_accepted(sim: SimClient) -> None:
    batch = [
        signal("pageView", name="n" * 256),
        signal("pageView", signalTimestamp="2025-08-31T08:29:30+02:00"),
        signal("pageView", signalTimestamp="2025-08-31T08:29Z"),
        signal("onSiteSearch", numberOfResults=2**31 - 1),
        signal("addToCart", unitPrice=40),  # an Int literal is a valid Float
        signal("error", errorType="application"),  # the tables' spelling
        signal("richMediaInteraction", interactionType="LAUNCH"),  # the examples' spelling
        signal("productView", dateAdded="2025-04-12 08:29:30.001", msrp=12.0),
        signal("cartAbandonment", abandonedItems=[{"productName": "x"}]),  # no required marks
        signal("pageView", productUrls="https://x"),  # GraphQL: one value is a list of one
        {**signal("identification"), "identifiableAttributes": {"whatsapp": "+14035549090"}},
    ]
    response = sim.post(batch)
    assert response.json()["data"]["createSignals"]["signalIds"].count(None) == 0, response.text
    assert "errors" not in response.json()


def test_every_problem_of_a_signal_is_reported(sim: SimClient) -> None:
    bad = signal("addToCart", currency="XXY", effect="meh", itemQuantity="2")
    bad["appKey"] = "nope"
    del bad["signalContent"]["productId"]
    body = sim.post([signal(), bad]).json()
    assert {e["extensions"]["index"] for e in body["errors"]} == {1}
    assert sorted(e["extensions"]["field"] for e in body["errors"]) == [
        "appKey",
        "signalContent.currency",
        "signalContent.effect",
        "signalContent.itemQuantity",
        "signalContent.productId",
    ]


def literal(value: Any) -> str:
    """A Python value as a GraphQL literal (strings JSON-quoted, keys bare)."""
    import json

    if isinstance(value, dict):
        return "{" + " ".join(f"{k}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + " ".join(literal(v) for v in value) + "]"
    if value is None:
        return "null"
    return json.dumps(value)


INLINE_CASES: Final = [c for c in CASES if c.rule.startswith(("type:", "enum:", "required:"))]


@pytest.mark.parametrize("case", INLINE_CASES[::4], ids=lambda c: c.rule)
def test_inline_literals_get_the_same_index_and_field(sim: SimClient, case: Case) -> None:
    batch = [signal("pageView"), signal("order"), case.make()]
    query = f"mutation {{ createSignals(signals: {literal(batch)}) {{ signalIds }} }}"
    body = sim.post(query=query).json()
    assert body["data"]["createSignals"]["signalIds"][:2] != [None, None]
    (error,) = body["errors"]
    assert error["extensions"]["index"] == 2 and error["extensions"]["field"] == case.field


def test_an_enum_literal_is_not_a_string(sim: SimClient) -> None:
    query = (
        'mutation { createSignals(signals: [{appKey: "test-app-key" '
        'identifiableAttributes: {email: "a@example.com"} '
        'signalContent: {signalType: pageView url: "https://x"}}]) { signalIds } }'
    )
    body = sim.post(query=query).json()
    (error,) = body["errors"]
    assert error["extensions"]["field"] == "signalContent.signalType"
    assert error["message"].endswith("must be String")
