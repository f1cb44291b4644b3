"""A closed session -> its cartAbandonment / browseAbandonment signals.

The derived signal is built as the JSON form of an event (what ``connect-pipeline
check`` reads: what the changelog keeps and a dead letter of it carries) and then goes
through the catalog's rules like any producer's event, so every catalog rule (item
fields, enumerations, defaults such as ``effect: negative`` and ``category:
Behavior``) applies to it unchanged. It takes the fused path an Avro record takes
(``pipeline.signals.fused``: the record reshaped into the decoder's form, every field
present), which is the strict path's result or "not sure"; only then the strict
pydantic path (validate, then map) decides. A session close cost ~70 µs, half of it
the strict path.

DECISIONS (README, "Derived abandonment"):

- Cart: the add-to-cart lines not ordered afterwards. An order removes the products
  it lists that were added before it (an order without ``orderedItems`` says nothing
  of its products: it is taken to be the whole cart's checkout). Products added after
  an order form a new cart.
- Currency of a cart in several currencies: the currency of the latest add, with the
  lines priced in it. A visitor who switches currency re-prices the cart, and the
  shop's cart then shows the latest currency; a sum across currencies would be a
  wrong number, and abandoned items carry no currency of their own, so a line priced
  in another currency cannot be listed without mispricing it. Browse: the currency of
  the most viewed product, with the viewed products priced in it.
- ``abandonedCartValue`` = sum of itemQuantity x (unitPrice - discount), a line never
  below 0, in exact decimal arithmetic (no 0.1 + 0.2 noise). ``discount`` is per unit,
  as addToCart's table defines it ("difference between original and current price");
  the specification's own example (159.97 for items worth 118.95) fits no reading.
- ``abandonmentReason``: the session's latest error signal, type application ->
  APPLICATION_ERROR, user -> USER_ERRORS; its errorText is the description.
- One signal of each kind per session: its idempotency key is a hash of the kind,
  the appKey and the sessionId, so a restart, a rebalance or a replay derives the
  same key and the delivery ledger never lets it through twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, Final

from pipeline.sessions.session import (
    CartLine,
    Session,
    SessionKey,
    format_ms,
    timestamp_ms,
)
from pipeline.signals import catalog
from pipeline.signals.fused import map_avro_record
from pipeline.signals.mapping import (
    MappedSignal,
    MappingOptions,
    map_event,
    merge_repeated_products,
)
from pipeline.signals.outcomes import Rejection
from pipeline.signals.validation import validate_event

CART: Final = "cartAbandonment"
BROWSE: Final = "browseAbandonment"
#: PIPELINE_DERIVE_ABANDONMENT's words -> the signal types they derive.
KINDS: Final = {"cart": frozenset({CART}), "browse": frozenset({BROWSE})}
KINDS["both"] = KINDS["cart"] | KINDS["browse"]
#: At most this many viewed products in a browse abandonment, most viewed first.
MAX_BROWSE_ITEMS: Final = 10


@dataclass(frozen=True, slots=True)
class DeriveOptions:
    kinds: frozenset[str]
    mapping: MappingOptions = field(default_factory=MappingOptions)
    max_browse_items: int = MAX_BROWSE_ITEMS

    @property
    def ordered_kinds(self) -> tuple[str, ...]:
        return _ordered(self.kinds)


@cache
def _ordered(kinds: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(kinds))


def idempotency_key(key: SessionKey, kind: str) -> str:
    """A function of the session and the kind only (plain ASCII: it travels in headers)."""
    # the appKey's length makes the text unambiguous whatever the strings contain
    canonical = f"{kind}:{len(key[0])}:{key[0]}{key[1]}".encode()
    return f"{kind}-{hashlib.sha256(canonical).hexdigest()[:40]}"


def _ordered_later(line: CartLine, session: Session) -> bool:
    product = line.item["productId"]
    return any(
        o.at >= line.at and (o.products is None or product in o.products)
        for o in session.orders.values()
    )


def _line_value(item: dict[str, Any]) -> Decimal:
    quantity = Decimal(item.get("itemQuantity", 1))
    price = _money(item["unitPrice"]) - _money(item.get("discount") or 0.0)
    return max(Decimal(0), quantity * price)


def _money(value: float) -> Decimal:
    return Decimal(repr(value))  # the shortest repr is what the producer wrote


def cart_content(session: Session) -> dict[str, Any] | None:
    """The cartAbandonment fields, or None when nothing added is left unordered."""
    adds = session.adds
    if len(adds) == 1:  # most carts: no sort, nothing to merge
        lines = list(adds.values())
    else:
        live = sorted(((line.at, key, line) for key, line in adds.items()), key=_first_two)
        lines = [line for _, _, line in live]
    if session.orders:
        lines = [line for line in lines if not _ordered_later(line, session)]
    if not lines:
        return None
    currency = lines[-1].currency
    if len(lines) == 1:  # most carts
        items = [dict(lines[0].item)]
        value = _line_value(items[0])
    else:
        items = [dict(li.item) for li in lines if li.currency == currency]  # item fields only
        if len(items) > 1:
            items = merge_repeated_products(items)
        value = sum((_line_value(i) for i in items), Decimal(0))
    content: dict[str, Any] = {
        "currency": currency,
        "abandonedCartValue": float(value),
        "abandonedItems": items,
    }
    if session.cart_url is not None:
        content["shoppingCartUrl"] = session.cart_url[1]
    return content


def _first_two(entry: tuple[int, str, CartLine]) -> tuple[int, str]:
    return entry[0], entry[1]


def browse_content(session: Session, max_items: int) -> dict[str, Any] | None:
    """The browseAbandonment fields, or None: an add or an order, or no priced view."""
    if session.adds or session.orders:
        return None
    ranked = sorted(
        ((product, v) for product, v in session.views.items() if v.complete),
        key=lambda pv: (-pv[1].count, pv[1].first, pv[0]),
    )
    if not ranked:
        return None
    currency = ranked[0][1].currency
    items = [dict(v.item) for _, v in ranked if v.currency == currency][:max_items]
    return {"currency": currency, "abandonedItems": items}


def derived_contents(session: Session, options: DeriveOptions) -> list[tuple[str, dict[str, Any]]]:
    """(kind, content fields) of the session's abandonment signals (none, or one per kind)."""
    contents = []
    for kind in options.ordered_kinds:
        if kind == CART:
            content = cart_content(session)
        else:
            content = browse_content(session, options.max_browse_items)
        if content is None:
            continue
        if session.error is not None:
            _, reason, text = session.error
            content["abandonmentReason"] = reason
            if text:
                content["abandonmentReasonDescription"] = text
        contents.append((kind, content))
    return contents


def json_record(
    key: SessionKey, identity: dict[str, Any], kind: str, content: dict[str, Any], at_ms: int
) -> dict[str, Any]:
    """The JSON form of a derived event (what ``connect-pipeline check`` reads, what a
    dead letter of it carries, what the strict path validates)."""
    return {
        "signalType": kind,
        "eventId": idempotency_key(key, kind),
        "sessionId": key[1],
        "appKey": key[0],
        "identifiableAttributes": identity or None,
        "eventTime": format_ms(at_ms),
        **content,
    }


def derived_records(
    session: Session, expiry_ms: int, options: DeriveOptions
) -> list[dict[str, Any]]:
    """The JSON-form events of the session's abandonment signals (none, or one per kind)."""
    return [
        json_record(session.key, session.identity, kind, content, expiry_ms)
        for kind, content in derived_contents(session, options)
    ]


def content_signal(
    key: SessionKey,
    identity: dict[str, Any],
    kind: str,
    content: dict[str, Any],
    at_ms: int,
    mapping: MappingOptions,
) -> MappedSignal | Rejection:
    """A derived signal through the catalog's rules, from its content: the decoder's
    form is built directly (no JSON-form event first, which only the strict path, a
    dead letter or a pending changelog record needs)."""
    fields, item_names = _shape(kind)
    form: dict[str, Any] = dict.fromkeys(fields)
    form.update(content)
    items = content.get("abandonedItems")
    if isinstance(items, list):
        form["abandonedItems"] = [_every(item_names, item) for item in items]
    form["eventId"] = idempotency_key(key, kind)
    form["sessionId"] = key[1]
    form["identifiableAttributes"] = _every(catalog.IDENTIFIABLE_ATTRIBUTES, identity)
    form["appKey"] = key[0]
    form["eventTime"] = _EPOCH + timedelta(milliseconds=at_ms)
    fused = map_avro_record(kind, form, mapping)
    if fused is not None:
        return fused
    return to_signal_strict(json_record(key, identity, kind, content, at_ms), mapping)


def _every(names: tuple[str, ...], values: Any) -> Any:
    """``values`` with every one of ``names`` (None when absent) and no other key, as
    the decoder gives a record (anything but a dict is left for the rules to refuse)."""
    if not isinstance(values, dict):
        return values
    every = dict.fromkeys(names)
    every.update(values)  # (C-level: a comprehension of .get calls cost 3 times more)
    if len(every) != len(names):  # keys of its own: left out
        every = {name: values.get(name) for name in names}
    return every


def to_signal(
    record: dict[str, Any], mapping: MappingOptions, at_ms: int | None = None
) -> MappedSignal | Rejection:
    """Through the catalog's rules, like a producer's event: the fused path when it is
    sure, else the strict one (which decides and explains a rejection). ``at_ms``: the
    record's eventTime as epoch ms, when the caller has it (not parsed back)."""
    kind = record["signalType"]
    fused = map_avro_record(kind, _avro_form(kind, record, at_ms), mapping)
    if fused is not None:
        return fused
    return to_signal_strict(record, mapping)


def to_signal_strict(record: dict[str, Any], mapping: MappingOptions) -> MappedSignal | Rejection:
    """Validation then mapping (pydantic): the one definition of the rules."""
    valid = validate_event(record["signalType"], record)
    if isinstance(valid, Rejection):
        return valid
    return map_event(valid, mapping)


@cache
def _shape(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(content fields, abandoned-item fields) of the type's Avro record, in order."""
    return tuple(fs.name for fs in catalog.SIGNALS[kind].fields), tuple(
        fs.name for fs in catalog.ABANDONED_ITEM.fields
    )


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _avro_form(kind: str, record: dict[str, Any], at_ms: int | None = None) -> dict[str, Any]:
    """The JSON-form derived record as the Avro decoder would return it: every field
    present (None when absent), identity with every attribute, eventTime a UTC datetime.
    Anything of another type makes the fused path unsure, never wrong."""
    fields, item_names = _shape(kind)
    form: dict[str, Any] = {name: record.get(name) for name in fields}
    items = form.get("abandonedItems")
    if isinstance(items, list):
        form["abandonedItems"] = [
            {name: item.get(name) for name in item_names} if isinstance(item, dict) else item
            for item in items
        ]
    identity = record.get("identifiableAttributes") or {}
    form["eventId"] = record["eventId"]
    form["sessionId"] = record["sessionId"]
    form["identifiableAttributes"] = {
        name: identity.get(name) for name in catalog.IDENTIFIABLE_ATTRIBUTES
    }
    form["appKey"] = record["appKey"]
    if at_ms is None:
        at_ms = timestamp_ms(record["eventTime"])
    form["eventTime"] = _EPOCH + timedelta(milliseconds=at_ms)
    return form
