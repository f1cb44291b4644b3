"""The offline check: JSON Lines events in, one verdict per line out.

How users test their producers' payloads without Kafka. Each input line is the JSON
form of an envelope+signal record, with ``signalType`` naming its type (the Avro
form carries the type in its record name instead)::

    {"signalType": "pageView", "eventId": "e-1", "sessionId": "s-1",
     "identifiableAttributes": {"email": "a@example.com"},
     "eventTime": "2025-08-31T08:29:30.001Z", "url": "https://www.example.com/"}
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.signals import catalog
from pipeline.signals.mapping import MappedSignal, MappingOptions
from pipeline.signals.outcomes import Reason, Rejection
from pipeline.signals.processor import Decoded, Dropped, EventProcessor
from pipeline.signals.validation import validate_event


@dataclass(frozen=True, slots=True)
class CheckOptions:
    mapping: MappingOptions
    tier: catalog.Tier = catalog.Tier.ULTIMATE


class _NoDecoder:
    """The check reads JSON itself: the processor's decoder is never asked."""

    def decode(self, value: bytes | None, headers: object = None) -> Decoded:
        raise AssertionError("the offline check decodes JSON itself")


def process_record(record: Any, options: CheckOptions) -> MappedSignal | Rejection:
    """decode (done) -> the processor's own tier -> validate -> map, for one JSON record.

    The same EventProcessor as ``run``, so a line gets the reason its Kafka record would.
    """
    if not isinstance(record, dict):
        return Rejection.single(Reason.VALIDATION, "", "an event must be a JSON object")
    signal_type = record.get("signalType")
    if not isinstance(signal_type, str):
        rule = "required" if signal_type is None else "must be a string"
        return Rejection.single(Reason.VALIDATION, "signalType", rule)
    if signal_type not in catalog.SIGNALS:
        valid = validate_event(signal_type, record)  # names the unknown type
        assert isinstance(valid, Rejection)
        return valid
    outcome = _processor(options).process_record(signal_type, record)
    assert not isinstance(outcome, Dropped)  # the check dead-letters out-of-tier events
    return outcome


@functools.cache
def _processor(options: CheckOptions) -> EventProcessor:
    return EventProcessor(_NoDecoder(), options.mapping, options.tier)


def verdict(line_number: int, outcome: MappedSignal | Rejection) -> dict[str, Any]:
    """The JSON verdict for one line."""
    if isinstance(outcome, Rejection):
        return {
            "line": line_number,
            "ok": False,
            "reason": str(outcome.reason),
            "field": outcome.field,
            "message": outcome.message,
            "errors": [{"field": p.field, "rule": p.rule} for p in outcome.problems],
        }
    return {
        "line": line_number,
        "ok": True,
        "idempotencyKey": outcome.idempotency_key,
        "signal": outcome.signal,
    }


def check_lines(lines: Iterable[str], options: CheckOptions) -> Iterator[dict[str, Any]]:
    """One verdict per non-blank input line, in order."""
    for number, outcome in line_outcomes(lines, options):
        yield verdict(number, outcome)


def line_outcomes(
    lines: Iterable[str], options: CheckOptions
) -> Iterator[tuple[int, MappedSignal | Rejection]]:
    """(line number, signal or rejection) per non-blank input line, in order."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as error:
            problem = _json_problem(error)
            yield number, Rejection.single(Reason.UNDECODABLE, "", problem)
            continue
        yield number, process_record(record, options)


def _json_problem(error: ValueError | RecursionError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON: {error.msg}"
    if isinstance(error, RecursionError):
        return "not valid JSON: nested too deeply"
    # CPython refuses integer literals over sys.get_int_max_str_digits() digits.
    return "not valid JSON: a number has too many digits"
