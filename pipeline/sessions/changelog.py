"""Session state as changelog records (bytes), and back.

A compacted topic keeps the latest value of each key: an open session, a closed
session's marker, or the partition's clock. Keys carry the source topic, since one
changelog partition serves partition ``p`` of every source topic. A session
forgotten for good is a tombstone (value None), which compaction removes.

Values are JSON (orjson): readable with any Kafka tool when an operator needs to
look at a session, and versioned (``v``) so a later layout can still read these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from pipeline.sessions.session import (
    CartLine,
    Order,
    Session,
    SessionKey,
    Viewed,
)

VERSION: Final = 1


@dataclass(slots=True)
class Closed:
    """A closed session, kept until no event of it can arrive in time any more.

    ``pending``: its derived signals (kind -> the signal) until each is settled
    (delivered, skipped by the ledger or dead-lettered): a restart re-emits them, and
    the ledger lets through only those Connect has not accepted. In the changelog
    each is its JSON-form event; in memory, the derived signal itself (its outcome
    already mapped, its JSON form made only if it is written), or the JSON-form event
    as read back from the changelog.
    """

    expiry: int
    pending: dict[str, Pending] = field(default_factory=dict)
    #: The session as it closed, while its signals are pending and no marker has been
    #: written: its changelog record stays the open session's (``encode``), from which
    #: a restart derives the same signals again (``SessionStore``, "Closing").
    session: Session | None = None


class HasRecord(Protocol):
    """A derived signal that can give its JSON-form event."""

    @property
    def record(self) -> dict[str, Any]: ...


#: A pending signal: the derived signal, or its JSON-form event read from the changelog.
Pending = HasRecord | dict[str, Any]


def pending_record(pending: Pending) -> dict[str, Any]:
    return pending if isinstance(pending, dict) else pending.record


@dataclass(slots=True)
class ClockState:
    watermark: int
    #: The last source offset applied to the state: records up to it, read again
    #: after a restart, are already in the sessions and are not applied twice.
    applied_offset: int


State = Session | Closed | ClockState


def session_record_key(topic: str, key: SessionKey) -> bytes:
    return orjson.dumps([topic, key[0], key[1]])


def clock_record_key(topic: str) -> bytes:
    return orjson.dumps([topic])


def parse_key(raw: bytes) -> tuple[str, SessionKey | None]:
    """(topic, session key), or (topic, None) for the clock record."""
    parts = orjson.loads(raw)
    if len(parts) == 1:
        return parts[0], None
    return parts[0], (parts[1], parts[2])


def encode(state: State) -> bytes:
    if isinstance(state, ClockState):
        return orjson.dumps({"v": VERSION, "w": state.watermark, "o": state.applied_offset})
    if isinstance(state, Closed):
        if state.session is not None:
            return encode(state.session)
        pending = {kind: pending_record(p) for kind, p in state.pending.items()}
        return orjson.dumps({"v": VERSION, "closed": state.expiry, "pending": pending})
    s = state
    return orjson.dumps(
        {
            "v": VERSION,
            "first": s.first,
            "last": s.last,
            "id": s.identity,
            "id_at": s.identity_at,
            "adds": {k: [a.at, a.currency, a.item] for k, a in s.adds.items()},
            "orders": {
                k: [o.at, None if o.products is None else sorted(o.products)]
                for k, o in s.orders.items()
            }
            if s.orders
            else {},
            "views": {p: [v.count, v.first, v.at, v.currency, v.item] for p, v in s.views.items()}
            if s.views
            else {},
            "url": s.cart_url,
            "err": s.error,
        }
    )


def decode(key: SessionKey | None, raw: bytes) -> State:
    d = orjson.loads(raw)
    if d.get("v") != VERSION:
        raise ValueError(f"changelog value version {d.get('v')!r}, expected {VERSION}")
    if key is None:
        return ClockState(d["w"], d["o"])
    if "closed" in d:
        return Closed(d["closed"], d["pending"])
    url, err = d["url"], d["err"]
    return Session(
        key[0],
        key[1],
        first=d["first"],
        last=d["last"],
        identity=d["id"],
        identity_at=d["id_at"],
        adds={k: CartLine(a[0], a[1], a[2]) for k, a in d["adds"].items()},
        orders={
            k: Order(o[0], None if o[1] is None else frozenset(o[1]))
            for k, o in d["orders"].items()
        },
        views={p: Viewed(v[0], v[1], v[2], v[3], v[4]) for p, v in d["views"].items()},
        cart_url=None if url is None else (url[0], url[1]),
        error=None if err is None else (err[0], err[1], err[2]),
    )
