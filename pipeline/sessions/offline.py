"""Derived abandonment from a JSON Lines clickstream, without Kafka.

``connect-pipeline check --derive FILE``: the file's events, in order, are one
partition's stream. Event time alone drives expiry (no wall clock), and at the end
of the file every session still open expires, as if the stream had gone quiet.
Each derived signal is printed as a verdict, and each input line that was rejected
(it could not count towards a session) with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.sessions.store import Derived, SessionStore
from pipeline.signals.check import CheckOptions, line_outcomes, verdict
from pipeline.signals.outcomes import Rejection


def derived_verdict(line: int | None, derived: Derived) -> dict[str, Any]:
    """``line``: the input line whose event time closed the session (None: the end)."""
    result = verdict(0, derived.outcome)
    result["line"] = line
    return {"derived": derived.kind, "sessionId": derived.key[1], **result}


def derive_lines(
    lines: Iterable[str], options: CheckOptions, store: SessionStore
) -> Iterator[dict[str, Any]]:
    """Rejected input lines and derived signals, in the order they happen."""
    for number, outcome in line_outcomes(lines, options):
        if isinstance(outcome, Rejection):
            yield verdict(number, outcome)
            continue
        for derived in store.observe(outcome, offset=number):
            yield derived_verdict(number, derived)
    for derived in store.close_all():
        yield derived_verdict(None, derived)
