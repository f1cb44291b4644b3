"""The commit cycle: offsets only behind finished records, transactional or plain.

Like Quix Streams' ``Checkpoint.commit()``, in numbered steps:

1. serve the producer's delivery reports (plain mode: acknowledged ledger records and
   dead letters finish their records);
2. take each current partition generation's committable offset (the first unfinished
   record; a retired generation has none to give);
3. commit: plain, an OffsetCommit; in a transaction, the offsets join the transaction
   (``send_offsets_to_transaction``) with the ledger records and dead letters written
   since the last cycle, and it commits; with nothing written, one OffsetCommit does
   what an offsets-only transaction does in three round trips;
4. landed: remember the offsets, count the dead letters, forget the ledger records;
5. aborted: return False; the loop rewinds (``positions``: where each partition is
   read again) and the ledger records are written again in the next transaction.
"""

from __future__ import annotations

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from pipeline.kafka.dead_letter_writer import DeadLetterWriter
from pipeline.kafka.ledger_writer import LedgerWriter
from pipeline.kafka.partition_state import Partitions
from pipeline.kafka.producer_sink import ProducerSink
from pipeline.kafka.records import Bounds, TopicPartitionKey
from pipeline.kafka.transactions import TransactionFatal, Transactions

log = structlog.get_logger("pipeline.kafka.commit_cycle")


class CommitCycle:
    def __init__(
        self,
        consumer: Consumer,
        sink: ProducerSink,
        transactions: Transactions | None,
        partitions: Partitions,
        dead_letters: DeadLetterWriter,
        ledger: LedgerWriter | None,
    ) -> None:
        self._consumer = consumer
        self._sink = sink
        self.transactions = transactions
        self._partitions = partitions
        self._dead_letters = dead_letters
        self.ledger = ledger  # set once the ledger is prepared
        #: per partition, the offset the last landed commit carried (any generation)
        self.last_committed: dict[TopicPartitionKey, int] = {}

    def commit(self, *, asynchronous: bool, only: set[TopicPartitionKey] | None = None) -> bool:
        """Run one cycle; False when the transaction was aborted (the caller rewinds)."""
        if self._sink.fatal:
            return True  # fenced or refused: nothing can be committed any more
        self._sink.poll()  # 1.
        if self.transactions is None:
            self._commit_plain(asynchronous, only)
            return True
        offsets = self._moved(None)  # 2. every partition: a transaction is all or nothing
        if not offsets and not self._sink.dirty:
            return True
        if not self._sink.dirty:
            self._commit_offsets(offsets)  # 3. nothing written since the last cycle
            return True
        if self._sink.abort_requested:
            self.transactions.abort("a produce was refused")
            committed = False
        else:
            try:
                committed = self.transactions.commit(offsets)  # 3.
            except TransactionFatal:
                self._sink.fatal = True
                raise
        self._sink.dirty = False
        self._sink.abort_requested = False
        if not committed:
            self._dead_letters.aborted()  # 5.
            return False
        for tp in offsets:  # 4.
            self.last_committed[(tp.topic, tp.partition)] = tp.offset
        if self.ledger is not None:
            self.ledger.committed()
        self._dead_letters.committed()
        return True

    def _moved(self, only: set[TopicPartitionKey] | None) -> list[TopicPartition]:
        offsets = []
        for state in self._partitions:
            if only is not None and state.key not in only:
                continue
            offset = state.offsets.committable()
            if offset is not None and offset != self.last_committed.get(state.key):
                offsets.append(TopicPartition(state.key[0], state.key[1], offset))
        return offsets

    def _commit_plain(self, asynchronous: bool, only: set[TopicPartitionKey] | None) -> None:
        offsets = self._moved(only)
        if offsets:
            self._commit_offsets(offsets, asynchronous=asynchronous)

    def _commit_offsets(self, offsets: list[TopicPartition], *, asynchronous: bool = False) -> None:
        """One OffsetCommit, checked against the group's generation.

        Also how the transactional cycle commits offsets of records that wrote nothing
        (skipped by the ledger, dropped): it sidesteps a quirk of the embedded Tansu broker,
        which does not apply offsets of a transaction that wrote no record (broker notes).
        """
        try:
            if asynchronous:  # two calls: the client's stubs type each flag apart
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:  # a rebalance in progress: the next cycle retries
            log.warning("commit failed", error=str(error))
            return
        for tp in offsets:
            self.last_committed[(tp.topic, tp.partition)] = tp.offset

    def forget(self, keys: set[TopicPartitionKey]) -> None:
        for key in keys:
            self.last_committed.pop(key, None)

    def positions(
        self, keys: list[TopicPartitionKey], bounds: Bounds | None
    ) -> list[TopicPartition]:
        """Where each partition is read again after an abort: its last landed commit."""
        positions = []
        for key in sorted(keys):
            offset = self.last_committed.get(key)
            if offset is None and bounds is not None:
                offset = bounds.start[key]
            if offset is None:
                (committed,) = self._consumer.committed([TopicPartition(*key)], timeout=30)
                offset = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
            positions.append(TopicPartition(key[0], key[1], offset))
        return positions
