"""How many duplicates a chaos run may show: the crash bound and the served-then-lost calls."""

from __future__ import annotations

from typing import Any

from pipeline.config import Settings
from pipeline.kafka.ledger import duplicate_bound


def crash_bound(kills: int, settings: Settings) -> int:
    """Signals a run with ``kills`` SIGKILLs may re-send: the delivery ledger's bound
    for one crash (``pipeline.kafka.ledger.duplicate_bound``), once per kill."""
    return kills * duplicate_bound(settings)


def retry_allowance(simulator_stats: dict[str, Any], settings: Settings) -> int:
    """Duplicates a correct client must send without any crash.

    A call the simulator served after the client timed out, or whose connection it
    dropped after recording the signals, is retried: with server-side idempotency off
    (as here) its signals are accepted twice. At most one batch per such call.
    """
    faults = simulator_stats.get("faults", {})
    served_unseen = int(faults.get("timeout", 0)) + int(faults.get("drop_after", 0))
    return served_unseen * settings.batch_max_signals
