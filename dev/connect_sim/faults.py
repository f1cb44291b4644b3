"""Fault injection: what goes wrong with each createSignals call, decided under a seed.

Every decision comes from one ``random.Random(seed)`` in request arrival order, so
a sequence of calls meets the same faults on every run with the same seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any, Final

#: The fault names a call can meet (also the keys of /stats "faults").
DROP: Final = "drop"  # the connection dies mid-response before anything is recorded
DROP_AFTER: Final = "drop_after"  # ... after the signals were recorded (the client can't know)
TIMEOUT: Final = "timeout"  # the server hangs timeout_s before answering
RATE_LIMITED: Final = "429"
SERVER_ERRORS: Final = ("500", "502", "503")


@dataclass
class Faults:
    """The fault settings; settable at start (CLI) and at run time (/admin/faults)."""

    seed: int = 0
    error_rate: float = 0.0  # probability of 500/502/503 (one of them, uniformly)
    rate_limit_rate: float = 0.0  # probability of 429
    rate_limit_burst: int = 0  # the next N calls get 429
    retry_after_s: float = 0.2  # the Retry-After of a 429
    latency_ms: float = 0.0  # processing time added to every call
    latency_jitter_ms: float = 0.0  # plus a uniform random share of this
    drop_connection_rate: float = 0.0  # probability of DROP
    drop_after_processing_rate: float = 0.0  # probability of DROP_AFTER
    timeout_rate: float = 0.0  # probability of TIMEOUT
    timeout_s: float = 30.0
    reject_whole_batch: bool = False  # any invalid signal rejects the whole batch

    @classmethod
    def from_json(cls, given: dict[str, Any]) -> Faults:
        """Settings from a JSON object; unknown names or wrong types raise ValueError."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"unknown fault settings: {unknown}")
        for name, value in given.items():
            wanted = known[name]
            ok = (
                isinstance(value, bool)
                if wanted == "bool"
                else isinstance(value, int | float) and not isinstance(value, bool)
            )
            if wanted == "int" and ok:
                ok = isinstance(value, int)
            if not ok or (wanted != "bool" and value < 0):
                raise ValueError(f"{name}: must be a non-negative {wanted}")
        return cls(**given)


class FaultPlan:
    """Draws each call's fault and latency from the seeded generator."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)
        self.burst_left = faults.rate_limit_burst

    def next_fault(self) -> str | None:
        f, r = self.faults, self.rng
        if self.burst_left > 0:
            self.burst_left -= 1
            return RATE_LIMITED
        # Always five draws, so one setting never shifts the sequence of another.
        drop, timeout, error, limit, drop_after = (r.random() for _ in range(5))
        if drop < f.drop_connection_rate:
            return DROP
        if timeout < f.timeout_rate:
            return TIMEOUT
        if error < f.error_rate:
            return r.choice(SERVER_ERRORS)
        if limit < f.rate_limit_rate:
            return RATE_LIMITED
        if drop_after < f.drop_after_processing_rate:
            return DROP_AFTER
        return None

    def latency_s(self) -> float:
        f = self.faults
        jitter = self.rng.uniform(0, f.latency_jitter_ms) if f.latency_jitter_ms else 0.0
        return (f.latency_ms + jitter) / 1000
