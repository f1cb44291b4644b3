"""How many duplicates a chaos run may show: the crash bound and the served-then-lost calls."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from pipeline.config import Settings


def duplicate_bound(kills: int, settings: Settings, batches_per_commit_interval: int) -> int:
    """Signals a run with ``kills`` SIGKILLs may re-send (local stand-in).

    TO BE REPLACED by ``pipeline.kafka.ledger.duplicate_bound`` once the delivery ledger
    lands. Without a ledger, a kill re-sends what was in flight plus what was settled
    since the last offset commit: ``kills * (max_in_flight_batches + batches settled per
    commit interval) * batch_max_signals``. The settle rate is not a setting, so the
    caller passes the one measured in the run (:func:`max_calls_in_window`).
    """
    per_kill = settings.max_in_flight_batches + batches_per_commit_interval
    return kills * per_kill * settings.batch_max_signals


def ledger_bound(kills: int, settings: Settings) -> int | None:
    """The delivery ledger's bound for ``kills`` crashes, when ``pipeline.kafka.ledger`` exists.

    The ledger states it per crash (``duplicate_bound(settings)``); a ``(kills,
    settings)`` form is accepted too. Any other shape is reported as unknown.
    """
    try:
        from pipeline import ledger  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        return None
    bound = getattr(ledger, "duplicate_bound", None)
    if bound is None:
        return None
    try:
        if "kills" in inspect.signature(bound).parameters:
            return int(bound(kills, settings))
        return kills * int(bound(settings))
    except (TypeError, ValueError):
        return None


def retry_allowance(simulator_stats: dict[str, Any], settings: Settings) -> int:
    """Duplicates a correct client must send without any crash.

    A call the simulator served after the client timed out, or whose connection it
    dropped after recording the signals, is retried: with server-side idempotency off
    (as here) its signals are accepted twice. At most one batch per such call.
    """
    faults = simulator_stats.get("faults", {})
    served_unseen = int(faults.get("timeout", 0)) + int(faults.get("drop_after", 0))
    return served_unseen * settings.batch_max_signals


def max_calls_in_window(call_times: Sequence[float], window_s: float) -> int:
    """The most accepted calls in any ``window_s``-long stretch (times sorted or not)."""
    times = sorted(call_times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window_s:
            start += 1
        best = max(best, end - start + 1)
    return best
