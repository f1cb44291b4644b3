"""Scripted sessions: JSON-form clickstream events and the store fed with them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any, Final

from pipeline.sessions.derive import KINDS, DeriveOptions
from pipeline.sessions.store import Derived, SessionOptions, SessionStore
from pipeline.signals.check import CheckOptions, process_record
from pipeline.signals.mapping import MappedSignal, MappingOptions

T0: Final = datetime(2025, 8, 31, 8, 0, tzinfo=UTC)
T0_MS: Final = int(T0.timestamp() * 1000)
GAP_S: Final = 1800
GRACE_S: Final = 60
APP: Final = "app-1"
_ids = count()


def at(seconds: float) -> str:
    moment = T0 + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def ms(seconds: float) -> int:
    return T0_MS + round(seconds * 1000)


def event(kind: str, session: str, t: float, **fields: Any) -> dict[str, Any]:
    return {
        "signalType": kind,
        "eventId": f"{session}-{kind}-{next(_ids)}",
        "sessionId": session,
        "appKey": APP,
        "identifiableAttributes": {"email": f"{session}@example.com"},
        "eventTime": at(t),
        **fields,
    }


def add(
    session: str,
    t: float,
    product: str,
    quantity: int = 1,
    price: float = 10.0,
    currency: str = "USD",
    **fields: Any,
) -> dict[str, Any]:
    return event(
        "addToCart",
        session,
        t,
        productId=product,
        productName=f"Product {product}",
        itemQuantity=quantity,
        unitPrice=price,
        currency=currency,
        **fields,
    )


def order(session: str, t: float, *products: str, currency: str = "USD") -> dict[str, Any]:
    fields: dict[str, Any] = {"orderId": f"o-{session}-{t}", "currency": currency}
    if products:
        fields["orderedItems"] = [
            {"productId": p, "productName": f"Product {p}", "unitPrice": 10.0} for p in products
        ]
    return event("order", session, t, **fields)


def view(
    session: str,
    t: float,
    product: str,
    price: float | None = 25.0,
    currency: str | None = "USD",
    **fields: Any,
) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if price is not None:
        extra["unitPrice"] = price
    if currency is not None:
        extra["currency"] = currency
    return event(
        "productView",
        session,
        t,
        productId=product,
        productName=f"Product {product}",
        **extra,
        **fields,
    )


def page(session: str, t: float) -> dict[str, Any]:
    return event("pageView", session, t, url="https://www.example.com/")


def error(session: str, t: float, error_type: str, text: str = "Card declined") -> dict[str, Any]:
    return event("error", session, t, errorText=text, errorType=error_type)


def mapped(record: dict[str, Any]) -> MappedSignal:
    outcome = process_record(record, CheckOptions(MappingOptions()))
    assert isinstance(outcome, MappedSignal), outcome
    return outcome


def options(
    kinds: str = "both", *, max_open: int = 1000, idle_s: float | None = None, max_items: int = 10
) -> SessionOptions:
    return SessionOptions(
        DeriveOptions(KINDS[kinds], MappingOptions(), max_items),
        gap_ms=GAP_S * 1000,
        grace_ms=GRACE_S * 1000,
        max_open=max_open,
        idle_ms=None if idle_s is None else round(idle_s * 1000),
    )


def feed(
    store: SessionStore, records: list[dict[str, Any]], *, first_offset: int = 0
) -> list[Derived]:
    derived: list[Derived] = []
    for offset, record in enumerate(records, start=first_offset):
        derived += store.observe(mapped(record), offset=offset)
    return derived


def run(records: list[dict[str, Any]], opts: SessionOptions | None = None) -> list[Derived]:
    """The whole stream, then every session expires (the end of the stream)."""
    store = SessionStore("clicks", opts or options())
    return feed(store, records) + store.close_all()


def signals(derived: list[Derived]) -> list[dict[str, Any]]:
    out = []
    for d in derived:
        assert isinstance(d.outcome, MappedSignal), d.outcome
        out.append(d.outcome.signal)
    return out
