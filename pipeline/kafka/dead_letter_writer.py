"""Writes dead letters: headers, size limits, value omission, redaction, produce, retry.

Plain mode: a record finishes when its dead letter is acknowledged; a transient
failure writes it again; a refusal by the topic stops the consumer uncommitted. In a
transaction the commit acknowledges the write: the record finishes at once and is
counted when the commit lands (an abort voids it: it is read and written again).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

import structlog
from confluent_kafka import KafkaError, KafkaException, Message

from pipeline.kafka.dead_letters import MAX_LEVEL, dead_letter_record, refused
from pipeline.kafka.producer_sink import ProducerSink
from pipeline.kafka.records import Pending, RecordOrigin
from pipeline.kafka.stops import is_refusal
from pipeline.ops import tracing
from pipeline.ops.logs import redacted
from pipeline.signals.outcomes import Rejection

log = structlog.get_logger("pipeline.kafka.dead_letters")

Coordinates = tuple[str, int, int]


class DeadLetterWriter:
    def __init__(
        self,
        sink: ProducerSink,
        topic: str,
        group_id: str,
        max_bytes: int,
        origin: RecordOrigin,
        *,
        finished: Callable[[Pending], None],
        counted: Callable[[str, int], None],
        write_failed: Callable[[], None] | None = None,
    ) -> None:
        self._sink = sink
        self.topic = topic
        self._group_id = group_id
        self._max_bytes = max_bytes
        self._origin = origin
        self._finished = finished
        self._counted = counted
        #: a write failed or was refused (a metric; not when it is retried smaller)
        self._write_failed = write_failed or (lambda: None)
        #: records a write was refused for as too large: how much to leave out next time
        self.levels: dict[Coordinates, int] = {}
        self.failed: deque[tuple[Pending, Rejection]] = deque()
        self.uncounted: Counter[str] = Counter()  # written in the open transaction

    def write(self, pending: Pending, rejection: Rejection) -> None:
        message = pending.message
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        source, attempt = self._origin.source(message)
        rejection = redacted(rejection)  # messages quote values: never a secret in headers
        coordinates = (topic, partition, offset)
        record = dead_letter_record(
            rejection,
            source,
            self._group_id,
            attempt,
            self._max_bytes,
            level=self.levels.get(coordinates, 0),
        )
        reason = str(rejection.reason)
        log.info(
            "dead-lettered",
            topic=topic,
            partition=partition,
            offset=offset,
            signal_type=pending.signal_type or None,
            event_id=rejection.event_id,
            reason=reason,
            field=rejection.field,
            error=rejection.message[:500],
            value_omitted_bytes=len(source.value or b"") if record.level else None,
            omitted_level=record.level or None,
        )
        if tracing.enabled():  # a span in the producer's trace (its traceparent header)
            headers = message.headers()
            tracing.dead_letter(reason, rejection.field, topic, partition, offset, headers)
        where = f"{topic}[{partition}]@{offset}"

        def acknowledged(error: KafkaError | None, _: Message) -> None:
            if self._sink.fatal:
                return  # stopping: nothing more is recorded
            if error is not None:
                too_large = error.code() == KafkaError.MSG_SIZE_TOO_LARGE
                if too_large and record.level < MAX_LEVEL:
                    self.levels[coordinates] = record.level + 1  # next time, smaller
                else:
                    self._write_failed()
                    if is_refusal(error) or too_large:
                        self._sink.fatal = True
                        raise refused(self.topic, error, where)
                if self._sink.transactional:
                    self._sink.stop_if_fatal(error)
                    return  # the commit fails and aborts: the record is read again
                log.warning("dead-letter write failed, retrying", error=str(error))
                self.failed.append((pending, rejection))
                return
            self.levels.pop(coordinates, None)
            if not self._sink.transactional:
                if not pending.state.retired:  # else its new owner dead-letters it again
                    self._counted(reason, 1)
                self._finished(pending)  # (a retired generation's: memory released only)

        try:
            self._sink.produce(
                self.topic,
                key=record.key,
                value=record.value,
                headers=list[tuple[str, str | bytes | None]](record.headers),
                on_delivery=acknowledged,
            )
        except KafkaException as exception:
            error: KafkaError = exception.args[0]
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE and record.level < MAX_LEVEL:
                self.levels[coordinates] = record.level + 1  # larger than estimated
                self.write(pending, rejection)
                return
            self._write_failed()
            self._sink.fatal = True
            raise refused(self.topic, error, where) from None
        if self._sink.transactional:
            # (a level stays: an abort could re-read the record)
            self.uncounted[reason] += 1
            self._finished(pending)

    def retry_failed(self) -> None:
        for _ in range(len(self.failed)):
            pending, rejection = self.failed.popleft()
            if not pending.state.retired:
                self.write(pending, rejection)

    def committed(self) -> None:
        """The transaction landed: its dead letters count."""
        for reason, count in self.uncounted.items():
            self._counted(reason, count)
        self.uncounted.clear()

    def aborted(self) -> None:
        """The transaction was aborted: its dead letters are void (read and written again)."""
        self.uncounted.clear()
        self.failed.clear()
