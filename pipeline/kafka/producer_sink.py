"""The consumer's producer (ledger records, dead letters): one place for its errors.

A full local queue waits; a fatal error (fencing) stops the consumer uncommitted; in
a transaction, a refused produce asks the commit cycle to abort and rewind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.kafka.stops import is_refusal
from pipeline.kafka.transactions import TransactionFatal, is_fatal

log = structlog.get_logger("pipeline.kafka.producer_sink")

#: librdkafka's report of one record: (the error or None, the record).
DeliveryCallback = Callable[[KafkaError | None, Message], None]


class ProducerSink:
    def __init__(self, producer: Producer, *, transactional: bool) -> None:
        self.producer = producer
        self.transactional = transactional
        self.fatal = False  # fenced or failed for good: nothing more can be recorded
        self.dirty = False  # something produced since the last commit
        self.abort_requested = False  # the open transaction must be aborted

    def produce(self, topic: str, **kwargs: Any) -> None:
        """Raises KafkaException for a record too large or refused by the topic."""
        while True:
            try:
                self.producer.produce(topic, **kwargs)
                self.dirty = True
                return
            except BufferError:
                self.poll(0.1)
            except KafkaException as exception:
                self._refused(exception)
                return

    def _refused(self, exception: KafkaException) -> None:
        """A record refused: raised, or the transaction to be aborted."""
        error: KafkaError = exception.args[0]
        code = error.code()
        if not self.transactional or code == KafkaError.MSG_SIZE_TOO_LARGE:
            raise exception
        if is_refusal(error):
            raise exception
        if self.fatal:
            return  # stopping after a fatal error: nothing can be recorded
        self.stop_if_fatal(error)
        log.warning("produce refused: the transaction is aborted", error=str(error))
        self.abort_requested = True

    def produce_records(
        self,
        topic: str,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Many (key, value) records to one partition (the session changelog's, a few
        per event): the client called with positional arguments, without a keyword
        dict per call twice over; a full queue and a refused record are handled as
        ``produce`` handles them. ``on_delivery``: told of each record's fate."""
        if not records:
            return
        send = self.producer.produce
        told = () if on_delivery is None else (on_delivery,)
        for key, value in records:
            try:
                send(topic, value, key, partition, *told)
            except BufferError:  # the queue is full: room made, then as ``produce``
                self.poll(0.1)
                self.produce(
                    topic, partition=partition, key=key, value=value, on_delivery=on_delivery
                )
            except KafkaException as exception:
                self._refused(exception)
        self.dirty = True

    def stop_if_fatal(self, error: KafkaError) -> None:
        """A write refused because a newer instance took over: stop sending at once."""
        if is_fatal(error) and not self.fatal:
            self.fatal = True
            raise TransactionFatal(str(error))

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports; a fatal producer error (fenced) stops the consumer."""
        try:
            self.producer.poll(timeout_s)
        except KafkaException as exception:
            if self.fatal:
                return
            error: KafkaError = exception.args[0]
            if is_fatal(error):
                self.fatal = True
                raise TransactionFatal(str(error)) from None
            raise

    def flush(self, timeout_s: float) -> int:
        return int(self.producer.flush(timeout_s))
