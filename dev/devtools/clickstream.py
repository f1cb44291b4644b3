"""A realistic synthetic clickstream, deterministic under a seed.

Sessions of page views, searches, product views, configurations, add-to-carts,
orders (some with a product repeated), errors, rich media, identification on login
and abandonment; a share of earlier-edition (v1) events and of invalid events. Used by
the demo, the integration tests, the chaos run and the benchmarks. Records are in the
Avro form (envelope + flat content, ``eventTime`` a datetime).

Event time is one clock for the whole stream: each event is stamped when it is
generated, so the stream (and every partition of it) is in event-time order and a
session derivation sees no late event the generator did not mean. Sessions
interleave, so consecutive events of one session are ~20 stream steps apart
(``pace`` scales the steps: the demo compresses time so that sessions close within
seconds). Deliberately late events (``late_ratio``): a straggler add-to-cart of a
session long over, ``late_by`` behind the stream's clock, marked ``late``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pipeline.signals import catalog
from pipeline.signals.catalog import V1

PRODUCTS: Final = [
    ("AC-PNT-WHT-SM", "AWESOME COLORS Interior Paint Satin Finish 32 Fl Oz", 39.99, "Paint"),
    ("AC-DBL-BRSH-6", "AWESOME COLORS Double Thick Chip Paint Brush", 9.49, "Tools"),
    ("OUT-CHAIR-TEAK-001", "Premium Teak Outdoor Dining Chair", 249.99, "Furniture"),
    ("OUT-TABLE-ALU-002", "Aluminum Extendable Patio Table 84 Inch", 899.99, "Furniture"),
    ("BR-2IN-PRO", "Professional Paint Brush 2 Inch", 12.99, "Tools"),
    ("LMP-DESK-LED", "LED Desk Lamp, dimmable", 54.0, "Lighting"),
    ("RUG-WOOL-8X10", "Hand-woven wool rug 8'x10' — ivory", 420.5, "Rugs"),
]
CURRENCIES: Final = ("USD", "EUR", "GBP")
SEARCHES: Final = ("paint with satin finish", "teak chair", "brush", "lamp", "zzzz no match")

#: Kinds of invalid event the generator plants, with the reason the pipeline gives.
INVALID_KINDS: Final = ("bad_currency", "long_name", "bad_enum", "missing_required", "no_identity")


@dataclass(frozen=True, slots=True)
class GeneratedEvent:
    signal_type: str
    record: dict[str, Any]
    edition: int  # 1: earlier-edition writer schema, 2: current
    invalid: str | None = None  # one of INVALID_KINDS, or None when valid
    late: bool = False  # deliberately late: ``late_by`` behind the stream's clock

    @property
    def event_id(self) -> str:
        return str(self.record["eventId"])


#: A session's steps (ms, at pace 1): a visitor's clicks are seconds apart. About 20
#: sessions interleave, so the stream's clock moves a twentieth of a step per event.
_STEP_MS: Final = (300, 20_000)
_INTERLEAVED: Final = 20
_MAX_LIVE: Final = 40


class _Clock:
    """The stream's event time, advanced at each generated event."""

    def __init__(self, start: datetime, pace: float) -> None:
        self.now = start
        self.pace = pace

    def step(self, rng: random.Random) -> datetime:
        low, high = _STEP_MS
        step = rng.randrange(low, high) * self.pace / _INTERLEAVED
        # whole milliseconds: eventTime is Avro timestamp-millis, so an event must
        # survive an encode/decode round trip unchanged
        self.now += timedelta(milliseconds=int(step))
        return self.now


class _Session:
    def __init__(self, rng: random.Random, number: int, clock: _Clock) -> None:
        self.rng = rng
        self.id = f"S{number:07d}-{rng.randrange(16**6):06x}"
        self.identity = self._identity(number)
        self.clock = clock
        self.time = clock.now
        self.seq = 0
        self.currency = rng.choice(CURRENCIES)
        self.cart: list[tuple[str, str, float, str]] = []

    def _identity(self, number: int) -> dict[str, str | None]:
        kind = self.rng.choice(catalog.IDENTIFIABLE_ATTRIBUTES)
        value = {
            "contactKey": f"AAUN-{number:09d}",
            "email": f"visitor{number}@example.com",
            "sms": f"+1403555{number % 10000:04d}",
            "whatsapp": f"+1403554{number % 10000:04d}",
        }[kind]
        return {k: (value if k == kind else None) for k in catalog.IDENTIFIABLE_ATTRIBUTES}

    def envelope(self) -> dict[str, Any]:
        self.seq += 1
        self.time = self.clock.step(self.rng)
        return {
            "eventId": f"{self.id}-{self.seq:04d}",
            "sessionId": self.id,
            "identifiableAttributes": dict(self.identity),
            "appKey": None,
            "eventTime": self.time,
        }


def _product(rng: random.Random) -> tuple[str, str, float, str]:
    return rng.choice(PRODUCTS)


def _content(session: _Session, signal_type: str) -> dict[str, Any]:
    rng = session.rng
    pid, pname, price, category = _product(rng)
    url = f"https://www.example.com/{category.lower()}/{pid.lower()}"
    match signal_type:
        case "pageView":
            return {"url": url, "pageCategory": category, "pageGroup": "Product pages"}
        case "onSiteSearch":
            term = rng.choice(SEARCHES)
            return {"searchTerm": term, "numberOfResults": 0 if "no match" in term else 9}
        case "productView":
            return {
                "productId": pid,
                "productName": pname,
                "currency": session.currency,
                "unitPrice": price,
                "availability": rng.choice(["In Stock", "Back Order"]),
                "brandName": "Awesome Colors",
                "dateAdded": "2025-04-12 08:29:30.001",
                "inventoryQuantity": rng.randrange(0, 200),
                "productCategory": category,
                "productUrls": [url],
                "tags": ["home", category.lower()],
            }
        case "productConfiguration":
            return {
                "productId": pid,
                "productName": pname,
                "currency": session.currency,
                "configurationType": rng.choice(["Size selection", "Color selection"]),
                "unitPrice": price,
            }
        case "addToCart":
            session.cart.append((pid, pname, price, category))
            return {
                "productId": pid,
                "productName": pname,
                "currency": session.currency,
                "itemQuantity": rng.randrange(1, 4),
                "unitPrice": price,
                "productCategory": category,
                "productUrls": [url],
                "shoppingCartUrl": "https://www.example.com/cart",
            }
        case "order":
            lines = session.cart or [_product(rng)]
            if rng.random() < 0.3:
                lines = [*lines, lines[0]]  # a repeated product: merged by the mapping
            items: list[dict[str, Any]] = [
                {
                    "productId": p,
                    "productName": n,
                    "unitPrice": pr,
                    "itemQuantity": rng.randrange(1, 3),
                    "currency": session.currency,
                    "productCategory": c,
                }
                for p, n, pr, c in lines
            ]
            subtotal = round(sum(i["unitPrice"] * i["itemQuantity"] for i in items), 2)
            session.cart = []
            return {
                "currency": session.currency,
                "orderId": f"{session.id}-ORD",
                "orderSubtotal": subtotal,
                "orderShippingHandling": 15.45,
                "orderTax": round(subtotal * 0.05, 2),
                "orderValue": round(subtotal * 1.05 + 15.45, 2),
                "orderedItems": items,
            }
        case "error":
            return {
                "errorText": "This promo code is invalid.",
                "errorType": rng.choice(["USER", "APPLICATION"]),
                "errorIdentifier": "promoCode",
            }
        case "identification":
            return {
                "identifierName": "email",
                "identifierValue": f"{session.id.lower()}@example.com",
                "identificationFromLogin": True,
            }
        case "richMediaInteraction":
            return {
                "mediaId": f"m{rng.randrange(1000)}",
                "interactionType": rng.choice(["LAUNCH", "PAUSE", "COMPLETE"]),
                "mediaCategory": "video",
                "url": url,
            }
        case "browseAbandonment" | "cartAbandonment":
            abandoned: list[dict[str, Any]] = [
                {"productId": p, "productName": n, "unitPrice": pr, "itemQuantity": 1}
                for p, n, pr, _ in (session.cart or [_product(rng)])
            ]
            content: dict[str, Any] = {
                "currency": session.currency,
                "abandonmentReason": rng.choice(catalog.ABANDONMENT_REASONS),
                "abandonedItems": abandoned,
            }
            if signal_type == "cartAbandonment":
                content["abandonedCartValue"] = round(sum(i["unitPrice"] for i in abandoned), 2)
            return content
    raise AssertionError(signal_type)


_JOURNEY: Final = (
    ("pageView", 1.0),
    ("onSiteSearch", 0.6),
    ("pageView", 0.9),
    ("productView", 0.9),
    ("richMediaInteraction", 0.2),
    ("productView", 0.6),
    ("productConfiguration", 0.4),
    ("identification", 0.3),
    ("addToCart", 0.45),
    ("error", 0.08),
    ("browseAbandonment", 0.1),
    ("order", 0.25),
    ("cartAbandonment", 0.1),
)


def _to_v1(signal_type: str, record: dict[str, Any]) -> dict[str, Any] | None:
    """The same event as an earlier-edition producer writes it (None: no v1 form)."""
    spec = catalog.SIGNALS[signal_type]
    if not spec.in_v1:
        return None
    v1 = {k: record[k] for k in ("eventId", "sessionId", "identifiableAttributes", "appKey")}
    v1["eventTime"] = record["eventTime"]
    for fs in spec.fields:
        if fs.v1 is V1.ABSENT:
            continue
        value = record.get(fs.name)
        if fs.items is not None and value is not None:
            renames = {i.name: i.v1_name for i in fs.items.fields if i.v1_name}
            kept = {i.name for i in fs.items.fields if i.v1 is not V1.ABSENT}
            value = [{renames.get(k, k): v for k, v in it.items() if k in kept} for it in value]
        v1[fs.name] = value
    v1.setdefault("category", "Behavior")
    v1["category"] = v1["category"] or "Behavior"
    v1["name"] = v1.get("name") or f"{signal_type} from online store"
    v1["effect"] = v1.get("effect") or (spec.suggested_effect or "positive")
    # Earlier-edition enumerations were written in lower case.
    for key in ("errorType", "interactionType"):
        if isinstance(v1.get(key), str):
            v1[key] = v1[key].lower()
    if signal_type == "productConfiguration":
        v1["configurationType"] = v1.get("configurationType") or "Size selection"
    if signal_type == "error":
        v1["errorIdentifier"] = v1.get("errorIdentifier") or "promoCode"
    return v1


def _spoil(rng: random.Random, signal_type: str, record: dict[str, Any]) -> str | None:
    """Make a valid v2 record invalid in a way Avro still encodes; returns the kind."""
    choices = ["long_name", "no_identity"]
    if "currency" in record:
        choices.append("bad_currency")
    if signal_type in ("error", "richMediaInteraction"):
        choices.append("bad_enum")
    if signal_type == "productConfiguration":  # currency: nullable in Avro, required now
        choices.append("missing_required")
    kind = rng.choice(choices)
    if kind == "long_name":
        record["name"] = "x" * 257
    elif kind == "no_identity":
        record["identifiableAttributes"] = dict.fromkeys(catalog.IDENTIFIABLE_ATTRIBUTES)
    elif kind == "bad_currency":
        record["currency"] = "USX"
    elif kind == "bad_enum":
        key = "errorType" if signal_type == "error" else "interactionType"
        record[key] = "SIDEWAYS"
    else:
        record["currency"] = None
    return kind


def clickstream(
    count: int,
    *,
    seed: int = 7,
    invalid_ratio: float = 0.03,
    v1_ratio: float = 0.05,
    start: datetime | None = None,
    pace: float = 1.0,
    late_ratio: float = 0.0,
    late_by: timedelta = timedelta(hours=2),
) -> Iterator[GeneratedEvent]:
    """``count`` events from interleaved sessions, in event-time order but for the
    ``late_ratio`` share of deliberately late ones (never among the first 100, so that
    every partition has a clock for them to be late against)."""
    rng = random.Random(seed)
    late_rng = random.Random(seed + 1)  # the stream is the same with or without them
    clock = _Clock(start or datetime(2025, 11, 1, 9, 0, tzinfo=UTC), pace)
    produced = 0
    session_number = 0
    live: list[_Session] = []
    while produced < count:
        if late_ratio and produced >= 100 and late_rng.random() < late_ratio:
            produced += 1
            yield _late_event(late_rng, produced, clock.now - late_by)
            continue
        # At most 40 sessions at once: each needs ~40 turns to end, so without a bound
        # the crowd (and one session's time between clicks) grew with the stream's
        # length, past any session gap.
        if len(live) < 20 or (rng.random() < 0.05 and len(live) < _MAX_LIVE):
            session_number += 1
            live.append(_Session(rng, session_number, clock))
        session = rng.choice(live)
        step = session.seq % len(_JOURNEY)
        signal_type, probability = _JOURNEY[step]
        if rng.random() > probability:
            session.seq += 1
            if session.seq > 3 * len(_JOURNEY):
                live.remove(session)
            continue
        record = {**session.envelope(), **_content(session, signal_type)}
        invalid = None
        edition = 2
        if rng.random() < invalid_ratio:
            invalid = _spoil(rng, signal_type, record)
        elif rng.random() < v1_ratio:
            v1 = _to_v1(signal_type, record)
            if v1 is not None:
                record, edition = v1, 1
        produced += 1
        yield GeneratedEvent(signal_type, record, edition, invalid)


def _late_event(rng: random.Random, number: int, at: datetime) -> GeneratedEvent:
    """An add-to-cart of a session over long ago (an app flushing its offline buffer)."""
    session = _Clock(at, 0.0)
    straggler = _Session(rng, 9_000_000 + number, session)
    record = {**straggler.envelope(), **_content(straggler, "addToCart")}
    return GeneratedEvent("addToCart", record, 2, late=True)
