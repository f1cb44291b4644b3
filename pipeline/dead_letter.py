"""Dead-letter records: the original bytes untouched, the reason in headers.

Header names follow Kafka Connect's errant-record convention (``__connect.errors.*``),
which operators already know and tools already read; what Connect has no header for
is under ``connect.signals.*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pipeline import __version__
from pipeline.outcomes import Reason, Rejection

#: Kafka Connect's stage names, by where in the path the event failed.
STAGES: Final = {
    Reason.UNDECODABLE: "VALUE_CONVERTER",
    Reason.UNKNOWN_SCHEMA: "VALUE_CONVERTER",
    Reason.VALIDATION: "TRANSFORMATION",
    Reason.SUBSCRIPTION: "TRANSFORMATION",
    Reason.API_REJECTED: "TASK_PUT",
}
#: The component that rejected it (Connect's ``class.name`` header).
COMPONENTS: Final = {
    Reason.UNDECODABLE: "pipeline.codec.EventDecoder",
    Reason.UNKNOWN_SCHEMA: "pipeline.codec.EventDecoder",
    Reason.VALIDATION: "pipeline.validation",
    Reason.SUBSCRIPTION: "pipeline.catalog.Tier",
    Reason.API_REJECTED: "pipeline.delivery.ConnectClient",
}
ATTEMPT_HEADER: Final = "connect.signals.attempt"
MAX_MESSAGE_BYTES: Final = 4_096


@dataclass(frozen=True, slots=True)
class Source:
    """Where the errant record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def dead_letter_headers(
    rejection: Rejection, source: Source, group_id: str, attempt: int = 1
) -> list[tuple[str, bytes]]:
    """The headers of a dead-letter record: the source's own, then the error's."""
    reason = rejection.reason
    message = rejection.message.encode()[:MAX_MESSAGE_BYTES]
    error_headers = {
        "__connect.errors.topic": source.topic,
        "__connect.errors.partition": str(source.partition),
        "__connect.errors.offset": str(source.offset),
        "__connect.errors.stage": STAGES[reason],
        "__connect.errors.class.name": COMPONENTS[reason],
        "__connect.errors.exception.class.name": str(reason),
        "connect.signals.reason": str(reason),
        "connect.signals.field": rejection.field,
        "connect.signals.timestamp": ""
        if source.timestamp_ms is None
        else str(source.timestamp_ms),
        "connect.signals.group": group_id,
        "connect.signals.pipeline.version": __version__,
        ATTEMPT_HEADER: str(attempt),
    }
    own = [(k, v) for k, v in source.headers if k not in error_headers and k != _MESSAGE]
    return [
        *own,
        *((k, v.encode()) for k, v in error_headers.items()),
        (_MESSAGE, message),
    ]


_MESSAGE: Final = "__connect.errors.exception.message"


def header_value(headers: Sequence[Sequence[Any]] | None, name: str) -> str | None:
    """The last value of a header, decoded (a redrive reads the previous attempt)."""
    for key, value in reversed(list(headers or [])):
        if key == name:
            if isinstance(value, bytes):
                return value.decode(errors="replace")
            return None if value is None else str(value)
    return None
