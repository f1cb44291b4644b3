"""Dead-letter records: the original bytes untouched, the reason in headers.

Header names follow Kafka Connect's errant-record convention (``__connect.errors.*``),
which operators already know and tools already read; what Connect has no header for
is under ``connect.signals.*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError

from pipeline import __version__
from pipeline.kafka.stops import UNCOMMITTED, ConsumerStopped
from pipeline.signals.outcomes import Reason, Rejection

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
    Reason.UNDECODABLE: "pipeline.codec.avro.EventDecoder",
    Reason.UNKNOWN_SCHEMA: "pipeline.codec.avro.EventDecoder",
    Reason.VALIDATION: "pipeline.signals.validation",
    Reason.SUBSCRIPTION: "pipeline.signals.catalog.Tier",
    Reason.API_REJECTED: "pipeline.connect.client.ConnectClient",
}
ATTEMPT_HEADER: Final = "connect.signals.attempt"
#: Set when the value was too large to dead-letter: the original size in bytes.
VALUE_OMITTED_HEADER: Final = "connect.signals.value.omitted"
#: Set when the key was left out too (a dead letter still too large without its value).
KEY_OMITTED_HEADER: Final = "connect.signals.key.omitted"
#: Set when source headers were left out: how many and why (too large, not UTF-8).
HEADERS_OMITTED_HEADER: Final = "connect.signals.headers.omitted"
#: A source header over this size is the first to go when a dead letter is too large.
LARGE_HEADER_BYTES: Final = 1_024
MAX_MESSAGE_BYTES: Final = 4_096
#: Room kept under the producer's message.max.bytes for record and batch framing.
RECORD_OVERHEAD_BYTES: Final = 1_024


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
    #: Why the source's headers are missing (they could not be read), or empty.
    headers_unreadable: str = ""


def dead_letter_headers(
    rejection: Rejection,
    source: Source,
    group_id: str,
    attempt: int = 1,
    *,
    omitted_value_bytes: int | None = None,
    omitted_key_bytes: int | None = None,
    omitted_headers: str = "",
) -> list[tuple[str, bytes]]:
    """The headers of a dead-letter record: the source's own, then the error's.

    ``omitted_value_bytes``: the record goes without its value (too large to write);
    the header and the exception message say so and give the original size. The key
    (``omitted_key_bytes``) and source headers (``omitted_headers``: what and why) go
    the same way when the record is still too large.
    """
    reason = rejection.reason
    text = rejection.message
    if omitted_value_bytes is not None:
        # first, so the truncation below never cuts it
        text = f"value of {omitted_value_bytes} bytes omitted (too large to dead-letter): {text}"
    message = text.encode()[:MAX_MESSAGE_BYTES]
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
    if omitted_value_bytes is not None:
        error_headers[VALUE_OMITTED_HEADER] = str(omitted_value_bytes)
    if omitted_key_bytes is not None:
        error_headers[KEY_OMITTED_HEADER] = str(omitted_key_bytes)
    omitted_headers = omitted_headers or source.headers_unreadable
    if omitted_headers:
        error_headers[HEADERS_OMITTED_HEADER] = omitted_headers
    own = [(k, v) for k, v in source.headers if k not in error_headers and k != _MESSAGE]
    return [
        *own,
        *((k, v.encode()) for k, v in error_headers.items()),
        (_MESSAGE, message),
    ]


_MESSAGE: Final = "__connect.errors.exception.message"


def record_bytes(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> int:
    """Key, value and header bytes: what counts against message.max.bytes, framing aside."""
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)


def header_value(headers: Sequence[Sequence[Any]] | None, name: str) -> str | None:
    """The last value of a header, decoded (a redrive reads the previous attempt)."""
    for key, value in reversed(list(headers or [])):
        if key == name:
            if isinstance(value, bytes):
                return value.decode(errors="replace")
            return None if value is None else str(value)
    return None


#: Header names a reader of the dead-letter topic needs (as dead_letter_headers writes).
TOPIC_HEADER: Final = "__connect.errors.topic"
PARTITION_HEADER: Final = "__connect.errors.partition"
OFFSET_HEADER: Final = "__connect.errors.offset"
MESSAGE_HEADER: Final = "__connect.errors.exception.message"
REASON_HEADER: Final = "connect.signals.reason"
FIELD_HEADER: Final = "connect.signals.field"
TIMESTAMP_HEADER: Final = "connect.signals.timestamp"
GROUP_HEADER: Final = "connect.signals.group"


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """What a dead letter's headers say; None where a header is missing or unreadable."""

    reason: str | None
    field: str | None
    topic: str | None
    partition: int | None
    offset: int | None
    timestamp_ms: int | None
    attempt: int
    message: str | None
    group: str | None


def parse_dead_letter_headers(headers: Sequence[Sequence[Any]] | None) -> DeadLetterInfo:
    """The one reader of dead-letter headers (redrive, ``connect-pipeline dlq``).

    The last value of each header wins: a redriven record carries the latest attempt's.
    """
    last: dict[str, str] = {}
    for key, value in headers or ():
        if isinstance(value, bytes):
            last[key] = value.decode(errors="replace")
        elif value is not None:
            last[key] = str(value)

    def number(name: str) -> int | None:
        try:
            return int(last[name])
        except (KeyError, ValueError):
            return None

    return DeadLetterInfo(
        reason=last.get(REASON_HEADER),
        field=last.get(FIELD_HEADER),
        topic=last.get(TOPIC_HEADER),
        partition=number(PARTITION_HEADER),
        offset=number(OFFSET_HEADER),
        timestamp_ms=number(TIMESTAMP_HEADER),
        attempt=number(ATTEMPT_HEADER) or 1,
        message=last.get(MESSAGE_HEADER),
        group=last.get(GROUP_HEADER),
    )


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """What is produced to the dead-letter topic for one errant record."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    #: how much was left out to fit: 0 nothing, 1 the value, 2 also the key and large
    #: source headers, 3 every source header
    level: int = 0


#: The last level: nothing of the source is left but its coordinates.
MAX_LEVEL: Final = 3


def dead_letter_record(
    rejection: Rejection,
    source: Source,
    group_id: str,
    attempt: int,
    max_bytes: int,
    *,
    level: int = 0,
) -> DeadLetterRecord:
    """The dead letter at the first level (from ``level`` on) that fits ``max_bytes``.

    Pure. A refusal as too large by the producer or broker asks again one level up, so
    a dead letter never stalls its partition: the coordinates and the reason always go.
    """
    limit = max_bytes - RECORD_OVERHEAD_BYTES
    while True:
        record = _at_level(rejection, source, group_id, attempt, level)
        if level >= MAX_LEVEL or record_bytes(record.key, record.value, record.headers) <= limit:
            return record
        level += 1


def _at_level(
    rejection: Rejection, source: Source, group_id: str, attempt: int, level: int
) -> DeadLetterRecord:
    if level == 0 or (level == 1 and source.value is None):
        headers = dead_letter_headers(rejection, source, group_id, attempt)
        return DeadLetterRecord(source.key, source.value, headers, level)
    value_bytes = None if source.value is None else len(source.value)
    if level == 1:
        headers = dead_letter_headers(
            rejection, source, group_id, attempt, omitted_value_bytes=value_bytes
        )
        return DeadLetterRecord(source.key, None, headers, level)
    kept: tuple[tuple[str, bytes], ...] = ()
    if level == 2:
        kept = tuple((k, v) for k, v in source.headers if len(k) + len(v) <= LARGE_HEADER_BYTES)
    dropped = len(source.headers) - len(kept)
    why = f"{dropped} of {len(source.headers)} omitted (too large to dead-letter)"
    key_bytes = None if source.key is None else len(source.key)
    headers = dead_letter_headers(
        rejection,
        Source(*_coordinates(source), None, None, kept, source.headers_unreadable),
        group_id,
        attempt,
        omitted_value_bytes=value_bytes,
        omitted_key_bytes=key_bytes,
        omitted_headers=why if dropped else "",
    )
    return DeadLetterRecord(None, None, headers, level)


def _coordinates(source: Source) -> tuple[str, int, int, int | None]:
    return source.topic, source.partition, source.offset, source.timestamp_ms


def header_pairs(message: Any) -> tuple[list[tuple[str, bytes]], str]:
    """A record's headers as (str, bytes), and why they are missing if unreadable.

    The client decodes header names as UTF-8 and raises on anything else: such a
    record's headers are left out of its dead letter (saying so), never a crash.
    """
    try:
        headers = message.headers() or []
    except (UnicodeDecodeError, ValueError) as error:
        return [], f"unreadable ({type(error).__name__}: not UTF-8)"
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in pairs], ""


class DeadLetterUnwritable(ConsumerStopped):
    """The dead-letter topic refused a record, or cannot be written at all."""


def refused(topic: str, error: KafkaError, where: str = "") -> DeadLetterUnwritable:
    at = f" (dead letter of {where})" if where else ""
    return DeadLetterUnwritable(
        f"dead-letter topic {topic!r} refused a record{at}: {error.str()} [{error.name()}]; "
        f"{UNCOMMITTED} (PIPELINE_DLQ_TOPIC)"
    )
