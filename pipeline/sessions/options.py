"""The session stage's options, and what a store reports: derived signals, counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.config import DeriveAbandonment, Settings
from pipeline.sessions.derive import KINDS, DeriveOptions
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


@dataclass(slots=True)
class Derived:
    """One derived signal: the JSON-form event and what validation/mapping made of it."""

    key: SessionKey
    kind: str
    record: dict[str, object]
    outcome: MappedSignal | Rejection
    evicted: bool = False


@dataclass(slots=True)
class Counters:
    opened: int = 0
    closed: int = 0
    evicted: int = 0  # closed early at the cap
    late: int = 0  # beyond the grace: ignored
    reused: int = 0  # a session id seen again after its session expired: ignored
    derived: Counter[str] = field(default_factory=Counter)
