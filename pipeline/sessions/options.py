"""The session stage's options, and what a store reports: derived signals, counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import DeriveAbandonment, Settings
from pipeline.sessions.derive import KINDS, DeriveOptions, json_record
from pipeline.sessions.session import SessionKey
from pipeline.signals.mapping import MappedSignal, MappingOptions
from pipeline.signals.outcomes import Rejection


@dataclass(frozen=True, slots=True)
class SessionOptions:
    derive: DeriveOptions
    gap_ms: int = 1_800_000
    grace_ms: int = 60_000
    #: Open sessions per partition; the longest idle is closed early past it.
    max_open: int = 100_000
    #: Wall time without an event after which the watermark follows the wall clock
    #: (None: the grace, at least one second).
    idle_ms: int | None = None

    @property
    def quiet_ms(self) -> int:
        return self.idle_ms if self.idle_ms is not None else max(1_000, self.grace_ms)


def session_options(settings: Settings, mapping: MappingOptions) -> SessionOptions | None:
    """The session stage's options from the settings (None: derivation is off)."""
    if settings.derive_abandonment is DeriveAbandonment.OFF:
        return None
    return SessionOptions(
        DeriveOptions(KINDS[settings.derive_abandonment.value], mapping),
        gap_ms=round(settings.session_gap_s * 1000),
        grace_ms=round(settings.session_grace_s * 1000),
        max_open=settings.session_max_open,
    )


class Derived:
    """One derived signal: what validation/mapping made of it, and its JSON-form event.

    The JSON form (``record``) is what the strict path validates, what a dead letter of
    it carries and what a pending changelog record keeps; most signals never need it,
    so it is built on first use from what the session closed with (``source``).
    """

    __slots__ = ("_record", "_source", "evicted", "key", "kind", "outcome")

    def __init__(
        self,
        key: SessionKey,
        kind: str,
        record: dict[str, Any] | None,
        outcome: MappedSignal | Rejection,
        evicted: bool = False,
        *,
        source: tuple[dict[str, Any], dict[str, Any], int] | None = None,
    ) -> None:
        self.key = key
        self.kind = kind
        self.outcome = outcome
        self.evicted = evicted
        self._record = record
        self._source = source  # (identity, content, event time in ms)

    @property
    def record(self) -> dict[str, Any]:
        if self._record is None:
            assert self._source is not None
            identity, content, at_ms = self._source
            self._record = json_record(self.key, identity, self.kind, content, at_ms)
            self._source = None
        return self._record

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Derived):
            return NotImplemented
        return (self.key, self.kind, self.record, self.outcome, self.evicted) == (
            other.key,
            other.kind,
            other.record,
            other.outcome,
            other.evicted,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Derived({self.key!r}, {self.kind!r}, evicted={self.evicted})"


@dataclass(slots=True)
class Counters:
    opened: int = 0
    closed: int = 0
    evicted: int = 0  # closed early at the cap
    late: int = 0  # beyond the grace: ignored
    reused: int = 0  # a session id seen again after its session expired: ignored
    split: int = 0  # events of a session open on another partition of the consumer
    derived: Counter[str] = field(default_factory=Counter)
