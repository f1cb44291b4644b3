"""Values that say why an event cannot be delivered.

A rejection is a value, never an exception: the data path returns it, the consumer
routes it to the dead-letter topic, the offline check prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """The class of a rejection; the dead-letter topic's reason header carries it."""

    UNDECODABLE = "undecodable"  # bytes that are not an Avro event in a known framing
    UNKNOWN_SCHEMA = "unknown_schema"  # a writer schema this pipeline cannot resolve
    VALIDATION = "validation"  # the event breaks a rule of the signal catalog
    SUBSCRIPTION = "subscription"  # the type is outside the configured subscription tier
    API_REJECTED = "api_rejected"  # Connect rejected the signal permanently


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: the field path (``orderedItems[1].unitPrice``) and the rule."""

    field: str
    rule: str

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}" if self.field else self.rule


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event can never be delivered, with every problem found."""

    reason: Reason
    problems: tuple[Problem, ...]
    # for the log line of a dead-lettered event, when known (never in DLQ headers)
    signal_type: str = ""
    event_id: str | None = None

    @property
    def field(self) -> str:
        """The first offending field path ('' when the whole event is at fault)."""
        return self.problems[0].field if self.problems else ""

    @property
    def message(self) -> str:
        return "; ".join(str(p) for p in self.problems)

    @classmethod
    def single(cls, reason: Reason, field: str, rule: str) -> Rejection:
        return cls(reason, (Problem(field, rule),))
