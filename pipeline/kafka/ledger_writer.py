"""The ledger's write side: one record per signal Connect accepted.

Reading (what to load on assignment, for a replay, for a redrive) is ``LedgerTail``'s
job, the only caller of the ledger's loader; this writer asks it for each record's
bytes and partition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog
from confluent_kafka import KafkaError, Message

from pipeline.kafka.ledger_tail import LedgerTail
from pipeline.kafka.producer_sink import ProducerSink

log = structlog.get_logger("pipeline.kafka.ledger_writer")

Acked = Callable[[], None]
#: (topic, partition, offset) of the source record a signal came from
SourceRef = tuple[str, int, int]


class LedgerWriter:
    """Writes ledger records; in a transaction, remembers them until the commit lands.

    Plain mode: ``acked`` runs when the broker has the record (a failure writes it
    again). In a transaction a failed write fails the commit, which aborts and rewinds;
    ``rewrite`` then writes the aborted transaction's records again (Connect's
    acceptance stays true), so the records read again are skipped, not re-sent.
    """

    def __init__(
        self, sink: ProducerSink, tail: LedgerTail, topic: str, *, backfill: bool = False
    ) -> None:
        self._sink = sink
        self.tail = tail
        self.topic = topic
        self._backfill = backfill  # a replay or redrive: records out of source order
        self._open: list[tuple[SourceRef, str, int]] = []  # in the open transaction

    def write(self, source: SourceRef, key: str, accepted_ms: int, acked: Acked | None) -> None:
        if self._sink.transactional:
            self._open.append((source, key, accepted_ms))
            callback: Callable[[KafkaError | None, Message], None] = self._refused
        else:

            def callback(error: KafkaError | None, _: Message) -> None:
                if error is None:
                    if acked is not None:
                        acked()
                else:
                    log.warning("ledger write failed, retrying", error=str(error))
                    self.write(source, key, accepted_ms, acked)

        topic, partition, offset = source
        self._sink.produce(
            self.topic,
            partition=self.tail.partition(partition),
            key=key.encode(),
            value=self.tail.value(accepted_ms, topic, partition, offset, backfill=self._backfill),
            on_delivery=callback,
        )

    def write_batch(self, rows: Sequence[tuple[SourceRef, str]], accepted_ms: int) -> None:
        """In a transaction: the records of one delivered batch's accepted signals
        (``write`` with no ``acked``, the per-signal lookups done once)."""
        if not self._sink.transactional:
            for source, key in rows:
                self.write(source, key, accepted_ms, None)
            return
        self._open.extend((source, key, accepted_ms) for source, key in rows)
        produce, tail, topic = self._sink.produce, self.tail, self.topic
        partition_of, value, backfill = tail.partition, tail.value, self._backfill
        for (source_topic, partition, offset), key in rows:
            produce(
                topic,
                partition=partition_of(partition),
                key=key.encode(),
                value=value(accepted_ms, source_topic, partition, offset, backfill=backfill),
                on_delivery=self._refused,
            )

    def _refused(self, error: KafkaError | None, _: Message) -> None:
        if error is not None:
            self._sink.stop_if_fatal(error)

    def committed(self) -> None:
        self._open.clear()

    def rewrite(self) -> None:
        """After an abort: the aborted transaction's records, in the new one."""
        rewritten, self._open = self._open, []
        for source, key, accepted_ms in rewritten:
            self.write(source, key, accepted_ms, None)
