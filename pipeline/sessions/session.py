"""What one session has seen: the facts abandonment is derived from.

A session keeps facts, not a running verdict: the add-to-cart lines and the orders
each with their event time, the viewed products with their view counts, the last
cart URL and the last error. Derivation (``derive.py``) is a function of these facts
and nothing else, so events that arrive out of order (within the grace) give the
same signal as in order, and an event delivered twice by a producer's retry (same
idempotency key) is one add, not two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from pipeline.signals import catalog
from pipeline.signals.mapping import MappedSignal

#: (appKey, sessionId): the session's identity. The appKey is the mapped one (the
#: event's, or the configured default), so one shop's session ids never meet another's.
SessionKey = tuple[str, str]

#: Fields of the abandoned-item object (catalog.ABANDONED_ITEM), in catalog order.
ITEM_FIELDS: Final = tuple(fs.name for fs in catalog.ABANDONED_ITEM.fields)
_VIEW_ITEM_FIELDS: Final = tuple(n for n in ITEM_FIELDS if n != "itemQuantity")
#: The item fields without which an abandoned item identifies nothing (catalog DECISION).
REQUIRED_ITEM_FIELDS: Final = tuple(fs.name for fs in catalog.ABANDONED_ITEM.fields if fs.required)

ERROR_REASONS: Final = {"APPLICATION": "APPLICATION_ERROR", "USER": "USER_ERRORS"}
VIEW_TYPES: Final = frozenset({"productView", "productConfiguration"})
#: The types that tell something to derive from; others (page views, searches) only
#: extend a session already open, and open none: most of a clickstream costs a lookup.
#: Product views matter to browse abandonment only.
OPENING_TYPES: Final = VIEW_TYPES | {"addToCart", "order", "error"}
CART_OPENING_TYPES: Final = frozenset({"addToCart", "order", "error"})


@dataclass(slots=True)
class CartLine:
    """One addToCart event."""

    at: int  # event time, epoch ms
    currency: str
    item: dict[str, Any]  # the abandoned-item fields (item_fields), itemQuantity included


@dataclass(slots=True)
class Order:
    """One order event: the products it contains (None: unknown, so all of them)."""

    at: int
    products: frozenset[str] | None


@dataclass(slots=True)
class Viewed:
    """One product viewed (productView or productConfiguration) in the session."""

    count: int
    first: int  # time of the first view: ties between equally viewed products
    at: int  # time of the view ``item`` was taken from
    currency: str | None
    item: dict[str, Any]  # the abandoned-item fields (view_item_fields)

    @property
    def complete(self) -> bool:
        """It can be an abandoned item: id, name, price, and the price's currency."""
        return self.currency is not None and all(k in self.item for k in REQUIRED_ITEM_FIELDS)


@dataclass(slots=True)
class Session:
    app_key: str
    session_id: str
    first: int  # earliest event time seen, epoch ms
    last: int  # latest event time seen: the session expires gap after it
    identity: dict[str, str] = field(default_factory=dict)
    identity_at: int = -1
    adds: dict[str, CartLine] = field(default_factory=dict)  # idempotency key -> line
    orders: dict[str, Order] = field(default_factory=dict)  # idempotency key -> order
    views: dict[str, Viewed] = field(default_factory=dict)  # productId -> views
    cart_url: tuple[int, str] | None = None
    error: tuple[int, str, str] | None = None  # (at, abandonmentReason, errorText)

    @property
    def key(self) -> SessionKey:
        return (self.app_key, self.session_id)


@lru_cache(maxsize=256)
def _epoch_day(date: str) -> int:
    return int(datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp())


def timestamp_ms(text: str) -> int:
    """``2025-08-31T08:29:30.001Z`` (mapping.format_timestamp's form) -> epoch ms.

    The minute is parsed once and cached, the seconds and milliseconds read from their
    digits: a stream's events share minutes, not always seconds (a datetime parse per
    event cost more than the rest of observing it; a cache by the second missed on
    most events of a shop's stream).
    """
    if len(text) == 24 and text[19] == "." and text[23] == "Z" and text[16] == ":":
        minute = MINUTES.get(text[:16])
        if minute is None:
            minute = _epoch_minute(text[:16])
        return minute + int(text[17:19]) * 1000 + int(text[20:23])
    moment = datetime.fromisoformat(text)
    return int(moment.timestamp() * 1000)


#: The minutes of the latest events: text (``2025-08-31T08:29``, checked) -> epoch ms.
MINUTES: dict[str, int] = {}


def _epoch_minute(text: str) -> int:
    if text[10] == "T" and text[13] == ":":
        minute = _epoch_day(text[:10]) + int(text[11:13]) * 3600 + int(text[14:16]) * 60
    else:
        minute = int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())
    if len(MINUTES) >= 4096:
        MINUTES.clear()
    MINUTES[text] = minute * 1000
    return minute * 1000


@lru_cache(maxsize=4096)
def _second_text(epoch_second: int) -> str:
    return datetime.fromtimestamp(epoch_second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def format_ms(ms: int) -> str:
    """Epoch ms -> ``2025-08-31T08:29:30.001Z`` (sessions expire in the same seconds)."""
    return f"{_second_text(ms // 1000)}.{ms % 1000:03d}Z"


def event_time(signal: MappedSignal) -> int:
    return timestamp_ms(signal.signal["signalContent"]["signalTimestamp"])


def new_session(key: SessionKey, at: int) -> Session:
    return Session(key[0], key[1], first=at, last=at)


def apply(session: Session, signal: MappedSignal, at: int) -> None:
    """Record what one event of the session says. Any event is activity."""
    if at < session.first:
        session.first = at
    if at > session.last:
        session.last = at
    body = signal.signal
    identity = body.get("identifiableAttributes")
    if identity and at >= session.identity_at:
        # the mapped event's own dict (nothing changes a mapped signal): no copy
        session.identity = identity
        session.identity_at = at
    content: dict[str, Any] = body["signalContent"]
    url = content.get("shoppingCartUrl")
    if url and (session.cart_url is None or at >= session.cart_url[0]):
        session.cart_url = (at, url)
    kind = signal.signal_type
    if kind == "addToCart":
        # Only the item fields are kept: the whole content held ~0.5 kB more per line,
        # and a line is filtered once here rather than at every changelog write.
        line = CartLine(at, content["currency"], item_fields(content))
        session.adds[signal.idempotency_key] = line
    elif kind == "order":
        ordered = content.get("orderedItems")
        products = frozenset(i["productId"] for i in ordered) if ordered else None
        session.orders[signal.idempotency_key] = Order(at, products)
    elif kind in VIEW_TYPES:
        _view(session, content, at)
    elif kind == "error":
        reason = ERROR_REASONS.get(content.get("errorType", ""))
        if reason and (session.error is None or at >= session.error[0]):
            session.error = (at, reason, content.get("errorText", ""))


def item_fields(content: dict[str, Any]) -> dict[str, Any]:
    """The abandoned-item fields of an add-to-cart's content."""
    return {k: content[k] for k in ITEM_FIELDS if k in content}


def view_item_fields(content: dict[str, Any]) -> dict[str, Any]:
    """The abandoned-item fields of a product view's content (no quantity)."""
    return {k: content[k] for k in _VIEW_ITEM_FIELDS if k in content}


def _view(session: Session, content: dict[str, Any], at: int) -> None:
    product = content["productId"]
    currency = content.get("currency")
    seen = session.views.get(product)
    if seen is None:
        session.views[product] = Viewed(1, at, at, currency, view_item_fields(content))
        return
    seen.count += 1
    if at < seen.first:
        seen.first = at
    # The product is described by its latest view with a price and a currency (or
    # its latest view, while none has them), whatever order the views arrive in.
    complete = currency is not None and "unitPrice" in content
    if (complete and not seen.complete) or (at >= seen.at and (complete or not seen.complete)):
        seen.at, seen.currency, seen.item = at, currency, view_item_fields(content)
