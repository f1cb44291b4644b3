"""The ledger's write side: what Connect accepted, one record per delivered batch and
source partition (format 3), or one per signal (format 2, ``PIPELINE_LEDGER_FORMAT=2``).

Reading (what to load on assignment, for a replay, for a redrive) is ``LedgerTail``'s
job, the only caller of the ledger's loader; this writer asks it for each record's
bytes and partition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog
from confluent_kafka import KafkaError, Message

from pipeline.kafka.ledger_records import V3_MAX_ENTRIES, batch_key, by_source
from pipeline.kafka.ledger_tail import LedgerTail
from pipeline.kafka.producer_sink import ProducerSink
from pipeline.kafka.stops import UNCOMMITTED, ConsumerStopped, is_refused_for_good

log = structlog.get_logger("pipeline.kafka.ledger_writer")

Acked = Callable[[], None]
#: (topic, partition, offset) of the source record a signal came from
SourceRef = tuple[str, int, int]
#: one accepted signal: where it came from, its idempotency key
Row = tuple[SourceRef, str]
#: one source partition's accepted signals: topic, partition, source offsets, keys
Source = tuple[str, int, list[int], list[str]]


class LedgerUnwritable(ConsumerStopped):
    """The ledger topic refused a record for good (gone, invalid, not ours, too large)."""


class LedgerWriter:
    """Writes ledger records; in a transaction, remembers them until the commit lands.

    Plain mode: ``acked`` runs when the broker has the record (a failure writes it
    again). In a transaction a failed write fails the commit, which aborts and rewinds;
    ``rewrite`` then writes the aborted transaction's records again (Connect's
    acceptance stays true), so the records read again are skipped, not re-sent.
    """

    def __init__(
        self,
        sink: ProducerSink,
        tail: LedgerTail,
        topic: str,
        *,
        backfill: bool = False,
        record_format: int = 3,
    ) -> None:
        self._sink = sink
        self.tail = tail
        self.topic = topic
        self._backfill = backfill  # a replay or redrive: records out of source order
        self._batched = record_format >= 3
        #: in the open transaction: each write, to make again after an abort
        self._open: list[Callable[[], None]] = []

    def write(self, source: SourceRef, key: str, accepted_ms: int, acked: Acked | None) -> None:
        """One signal's record (format 2)."""
        if self._sink.transactional:
            self._open.append(lambda: self.write(source, key, accepted_ms, None))
        self._write_one(source, key, accepted_ms, acked)

    def write_sources(
        self,
        sources: Sequence[Source],
        accepted_ms: int,
        acked: Sequence[Acked] | None = None,
    ) -> None:
        """``write_batch`` for a delivered batch's accepted signals already grouped by
        source partition (topic, partition, offsets, keys). Plain mode: ``acked[i]`` runs
        once every record of source ``i`` is on the broker (one callback a source, not
        one a signal); in a transaction the commit finishes them (``acked`` None)."""
        if self._sink.transactional:
            self._open.append(lambda: self.write_sources(sources, accepted_ms))
        for index, (topic, partition, offsets, keys) in enumerate(sources):
            done = None if acked is None else acked[index]
            if not self._batched:
                done = _after(len(offsets), done)
                for offset, key in zip(offsets, keys, strict=True):
                    self._write_one((topic, partition, offset), key, accepted_ms, done)
                continue
            items = list(zip(offsets, keys, strict=True))
            done = _after(-(-len(items) // V3_MAX_ENTRIES), done)
            for at in range(0, len(items), V3_MAX_ENTRIES):
                chunk = items if len(items) <= V3_MAX_ENTRIES else items[at : at + V3_MAX_ENTRIES]
                self._write_group(topic, partition, chunk, accepted_ms, done)

    def write_batch(
        self,
        rows: Sequence[Row],
        accepted_ms: int,
        acked: Sequence[Acked] | None = None,
    ) -> None:
        """The records of one delivered batch's accepted signals. Plain mode: ``acked[i]``
        runs when row ``i``'s record is on the broker; in a transaction the commit
        finishes them (``acked`` None)."""
        if self._sink.transactional:
            self._open.append(lambda: self.write_batch(rows, accepted_ms))
        self._write_rows(rows, accepted_ms, acked)

    def _write_rows(
        self, rows: Sequence[Row], accepted_ms: int, acked: Sequence[Acked] | None
    ) -> None:
        if not self._batched:
            for index, (source, key) in enumerate(rows):
                self._write_one(source, key, accepted_ms, None if acked is None else acked[index])
            return
        if acked is None:
            for (topic, partition), items in by_source(rows):
                self._write_group(topic, partition, items, accepted_ms, None)
            return
        # plain mode: each row's callback goes with its row into its source's record
        groups: dict[tuple[str, int], list[int]] = {}
        for index, ((topic, partition, _), _) in enumerate(rows):
            groups.setdefault((topic, partition), []).append(index)
        for (topic, partition), indexes in groups.items():
            for at in range(0, len(indexes), V3_MAX_ENTRIES):
                chunk = indexes[at : at + V3_MAX_ENTRIES]
                items = [(rows[i][0][2], rows[i][1]) for i in chunk]
                self._write_group(
                    topic, partition, items, accepted_ms, _each([acked[i] for i in chunk])
                )

    def _write_group(
        self,
        topic: str,
        partition: int,
        items: list[tuple[int, str]],
        accepted_ms: int,
        acked: Acked | None,
    ) -> None:
        """One format-3 record for ``items`` (source offset, key) of one source partition
        (one format-2 record each when the format cannot hold them); ``acked`` runs once
        the broker has all of them."""
        value = self.tail.batch_value(accepted_ms, topic, partition, items, backfill=self._backfill)
        if value is None:  # a key the format cannot hold: one record each
            done = _after(len(items), acked)
            for offset, key in items:
                self._write_one((topic, partition, offset), key, accepted_ms, done)
            return
        callback: Callable[[KafkaError | None, Message], None]
        if acked is None:
            callback = self._refused
        else:

            def callback(error: KafkaError | None, _: Message) -> None:
                if error is None:
                    acked()
                elif self._retry_after(error):  # with a fresh horizon (records may be past it)
                    self._write_group(topic, partition, items, accepted_ms, acked)

        self._sink.produce(
            self.topic,
            partition=self.tail.partition(partition),
            key=batch_key(value),
            value=value,
            on_delivery=callback,
        )

    def _write_one(
        self, source: SourceRef, key: str, accepted_ms: int, acked: Acked | None
    ) -> None:
        if self._sink.transactional:
            callback: Callable[[KafkaError | None, Message], None] = self._refused
        else:

            def callback(error: KafkaError | None, _: Message) -> None:
                if error is None:
                    if acked is not None:
                        acked()
                elif self._retry_after(error):
                    self._write_one(source, key, accepted_ms, acked)

        topic, partition, offset = source
        self._sink.produce(
            self.topic,
            partition=self.tail.partition(partition),
            key=key.encode(),
            value=self.tail.value(accepted_ms, topic, partition, offset, backfill=self._backfill),
            on_delivery=callback,
        )

    def _refused(self, error: KafkaError | None, _: Message) -> None:
        """In a transaction: a failed write fails the commit, which aborts and re-reads;
        one the topic refuses for good would do so for ever, so it stops the consumer."""
        if error is not None and not self._sink.fatal:
            self._stop_if_refused(error)
            self._sink.stop_if_fatal(error)

    def _retry_after(self, error: KafkaError) -> bool:
        """Outside a transaction: whether to write again after this failure (not when
        stopping, nor when the topic refused it for good: that stops the consumer)."""
        if self._sink.fatal:
            return False
        self._stop_if_refused(error)
        log.warning("ledger write failed, retrying", error=str(error))
        return True

    def _stop_if_refused(self, error: KafkaError) -> None:
        if is_refused_for_good(error):
            self._sink.fatal = True
            raise LedgerUnwritable(
                f"ledger topic {self.topic!r} refused a record: {error.str()} "
                f"[{error.name()}]; {UNCOMMITTED}, and what Connect accepted since is "
                "sent again with the same keys (PIPELINE_LEDGER_TOPIC)"
            )

    def committed(self) -> None:
        self._open.clear()

    def rewrite(self) -> None:
        """After an abort: the aborted transaction's records, in the new one."""
        rewritten, self._open = self._open, []
        for write in rewritten:
            write()


def _after(records: int, acked: Acked | None) -> Acked | None:
    """``acked`` once the last of ``records`` records is acknowledged (each record's
    callback runs once, on success: a failed write is retried with the same one)."""
    if acked is None or records <= 1:
        return acked
    left = [records]

    def one() -> None:
        left[0] -= 1
        if not left[0]:
            acked()

    return one


def _each(acked: list[Acked]) -> Acked:
    """One callback for a record that holds several signals' (``write_batch``'s rows)."""

    def run() -> None:
        for done in acked:
            done()

    return run
