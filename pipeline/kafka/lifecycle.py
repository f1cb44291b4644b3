"""A consumer's life around its loop: start, assignments, revocations, the rewind after
an aborted transaction, drain and shutdown (the loop itself is ``consumer.py``).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Final

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.config import Settings
from pipeline.kafka.batcher import Batcher
from pipeline.kafka.commit_cycle import CommitCycle
from pipeline.kafka.dead_letter_topic import ensure_dead_letter_topic
from pipeline.kafka.dead_letter_writer import DeadLetterWriter
from pipeline.kafka.deliveries import Deliveries
from pipeline.kafka.flow import FlowControl
from pipeline.kafka.group_join import JoiningConsumer, consumer_config
from pipeline.kafka.ledger_index import LedgerIndex
from pipeline.kafka.ledger_tail import LedgerTail, watch_ledger
from pipeline.kafka.ledger_writer import LedgerWriter
from pipeline.kafka.partition_state import Partitions
from pipeline.kafka.producer_sink import ProducerSink
from pipeline.kafka.records import Bounds, Pending, RunSummary, TopicPartitionKey
from pipeline.kafka.session_hooks import Emit, SessionHooks
from pipeline.kafka.stops import UNCOMMITTED, ConsumerStopped
from pipeline.kafka.transactions import TransactionFatal, Transactions
from pipeline.ops.health import HealthState
from pipeline.ops.metrics import PipelineMetrics

if TYPE_CHECKING:
    from pipeline.connect.client import ConnectClient

log = structlog.get_logger("pipeline.kafka.consumer")

#: How long an assignment waits, inside its callback, for its ledger tails' load: a
#: new or small ledger loads within milliseconds, and a partition started there is read
#: from its first fetch. One whose load takes longer is held and loads beside the loop:
#: what it fetched meanwhile is dropped and read again once loaded.
QUICK_LOAD_S: Final = 0.1


class ChangelogUnwritable(ConsumerStopped):
    """Outside a transaction, the session changelog could not be written."""


class ConsumerLifecycle:
    """Mixed into ``SignalConsumer``: what happens around the loop, not in it."""

    _settings: Settings
    _bounds: Bounds | None
    _consumer: Consumer
    _producer: Producer
    _client: ConnectClient
    _sink: ProducerSink
    _dead_letters: DeadLetterWriter
    _txn: Transactions | None
    _tail: LedgerTail | None
    _ledger_writer: LedgerWriter | None
    _partitions: Partitions
    _batcher: Batcher
    _deliveries: Deliveries
    _cycle: CommitCycle
    _flow: FlowControl
    _sessions: SessionHooks | None
    _abandon: threading.Event
    _bounded: set[TopicPartitionKey]
    _done: set[TopicPartitionKey]
    _ever_assigned: bool
    _to_hold: list[TopicPartitionKey]
    _last_commit: float
    _last_record: float
    ledger: LedgerIndex
    health: HealthState
    metrics: PipelineMetrics
    summary: RunSummary

    def _dispatch(self) -> None:
        raise NotImplementedError

    def _collect_reports(self, block_s: float = 0.0) -> None:
        raise NotImplementedError

    def _unsent(self, pending: Pending) -> None:
        raise NotImplementedError

    def _derived(self, emits: list[Emit]) -> None:
        raise NotImplementedError

    # --- start ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Before any read: join the group first (the join waits on the broker, seconds
        on some), then, while it waits, the dead-letter topic, the ledger and the
        transaction; a replay's partitions are assigned last. The rebalance callbacks
        run only inside ``consume()``: none can come before all of this is done."""
        settings = self._settings
        self._to_hold = []  # assigned, their ledger tails loading: paused on the next turn
        if self._bounds is None:
            self._join_group()
        ensure_dead_letter_topic(settings.kafka_common(), settings.dlq_topic)
        if settings.ledger_enabled:
            reset = str(consumer_config(settings).get("auto.offset.reset", "earliest"))
            tail = self._tail = LedgerTail.prepare(settings, self.ledger, offset_reset=reset)
            self.health.ledger_load = tail.load_state
            watch_ledger(self.metrics.registry, tail.loader.progress, self.ledger)
            self._ledger_writer = LedgerWriter(
                self._sink,
                tail,
                settings.ledger_topic_name,
                backfill=self._bounds is not None,
                record_format=settings.ledger_format,
            )
            self._cycle.ledger = self._ledger_writer
        if self._txn is not None:
            self._txn.start()
        if self._sessions is not None:
            self._sessions.prepare()  # the session changelog topic
        if self._bounds is not None:
            self._assign_bounds(self._bounds)

    def _join_group(self) -> None:
        consumer = self._consumer
        if isinstance(consumer, JoiningConsumer):  # subscribed when the process started
            consumer.attach(
                on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            return
        consumer.subscribe(
            self._settings.source_topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _assign_bounds(self, bounds: Bounds) -> None:
        todo = {tp: start for tp, start in bounds.start.items() if start < bounds.end[tp]}
        self._done.update(tp for tp in bounds.start if tp not in todo)
        if self._tail is not None and not bounds.ledger_preloaded:
            if bounds.whole_ledger:
                self._tail.everything(bounds.ledger_keys)
            else:
                self._tail.bounded(todo, bounds.end)
        self._consumer.assign([TopicPartition(t, p, start) for (t, p), start in todo.items()])
        self._partitions.assign(todo)
        if self._sessions is not None:
            self._sessions.assign(todo)  # a replay: from the range's events alone
        self._bounded = set(todo)
        self._ever_assigned = True

    def _reached_end(self, key: TopicPartitionKey) -> None:
        """Bounded mode: this partition is read up to its end offset."""
        if key in self._done:
            return
        self._done.add(key)
        self._consumer.pause([TopicPartition(*key)])
        log.info("partition read to its end offset", partition=f"{key[0]}[{key[1]}]")

    # --- rebalances ----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._tail is None or not partitions:
            self._activate([(tp.topic, tp.partition) for tp in partitions])
            return
        # Their ledger tails load beside the loop: a long load inside this callback would
        # stop the loop (the other partitions' deliveries and commits, revocations, the
        # group's next rebalance). A quick one ends here (QUICK_LOAD_S); the others'
        # records are held until then (``_ledger_loads``).
        tail = self._tail
        keys = tail.start_loading(consumer, partitions)
        self.health.joined = True
        new = set(keys)
        starts: dict[TopicPartitionKey, int] = {}
        deadline = time.monotonic() + QUICK_LOAD_S
        while any(tail.waits(key) for key in keys) and time.monotonic() < deadline:
            if not tail.ended:
                time.sleep(0.001)
                continue
            ready = tail.loaded(consumer)
            self._start_loaded([(key, start) for key, start in ready if key not in new])
            loaded = [(key, start) for key, start in ready if key in new]
            starts.update(loaded)
            self._activate([key for key, _ in loaded])
        # Loaded partitions are fetched from where their reading starts (their committed
        # offset or auto.offset.reset's, which the load looked up) rather than after
        # librdkafka's own look-up: without a committed offset it waits 100 ms first.
        consumer.incremental_assign(
            [
                TopicPartition(tp.topic, tp.partition, starts[key])
                if (key := (tp.topic, tp.partition)) in starts
                else tp
                for tp in partitions
            ]
        )
        held = [key for key in keys if tail.waits(key)]
        if held:
            self._to_hold.extend(held)
            log.info(
                "partitions assigned, loading their ledger tails",
                partitions=[f"{t}[{p}]" for t, p in held],
            )

    def _ledger_loads(self) -> None:
        """Each loop turn: hold newly assigned partitions while their ledger tails load
        (pause() takes effect only after the assign callback returned), and start those
        whose load ended. A record of a partition still loading is dropped as not ours
        (its state does not exist yet); the partition is then read again from where its
        reading starts, so nothing is handled before its keys are in the index."""
        tail = self._tail
        if tail is None:
            return
        if self._to_hold:
            held, self._to_hold = self._to_hold, []
            waiting = [key for key in held if tail.waits(key)]
            if waiting:
                self._consumer.pause([TopicPartition(*key) for key in waiting])
        if tail.ended:
            self._start_loaded(tail.loaded(self._consumer))

    def _start_loaded(self, ready: list[tuple[TopicPartitionKey, int]]) -> None:
        """Held partitions whose load ended, each with the offset its reading starts from:
        read again from there if records were fetched (and dropped) meanwhile, resumed."""
        if not ready:
            return
        for (topic, partition), start in ready:
            (position,) = self._consumer.position([TopicPartition(topic, partition)])
            if position.offset >= 0 and position.offset != start:
                try:  # records were read (and dropped) while it loaded: read them again
                    self._consumer.seek(TopicPartition(topic, partition, start))
                except KafkaException as error:
                    raise ConsumerStopped(f"seek of {topic}[{partition}]: {error}") from None
        keys = [key for key, _ in ready]
        self._activate(keys)
        if not self._flow.paused:
            self._consumer.resume([TopicPartition(*key) for key in keys])

    def _activate(self, keys: list[TopicPartitionKey]) -> None:
        """Partitions ready to be read: a new generation each, their sessions."""
        self._partitions.assign(keys)
        if self._sessions is not None:  # their sessions; what they derived, still unsent
            self._derived(self._sessions.assign(keys))
        self._ever_assigned = True
        self.health.joined = True
        self._last_record = time.monotonic()
        self._flow.newly_assigned([TopicPartition(*key) for key in keys])
        log.info("partitions assigned", partitions=[f"{t}[{p}]" for t, p in keys])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        landed = True
        if not self._sink.fatal:  # fenced: nothing can be committed, hand them over as is
            self._drain(self._settings.drain_timeout_s)
            self._last_commit = time.monotonic()
            landed = self._commit_cycle(asynchronous=False, only=revoked)
        self._retire(revoked)
        if not landed:
            self._rewind()  # the partitions kept are read again; the revoked are gone
        log.info("partitions revoked", partitions=sorted(f"{t}[{p}]" for t, p in revoked))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._retire({(tp.topic, tp.partition) for tp in partitions})
        log.warning("partitions lost", count=len(partitions))

    def _retire(self, keys: set[TopicPartitionKey]) -> None:
        self._partitions.retire(keys)
        self._cycle.forget(keys)
        self._flow.forget(keys)
        if self._tail is not None:
            self._tail.cancel(keys)
        if self._sessions is not None:
            self._sessions.revoke(keys)

    def _rewind(self) -> None:
        """The transaction was aborted: every partition is read again from its last
        commit, as a new generation. What Connect accepted stays accepted: its ledger
        records are written again, so the records read again are skipped; what is still
        on its way keeps its key in flight, so a record read again waits for it."""
        self._partitions.renew()
        for batch in self._batcher.clear():
            for pending in batch.refs:
                self._unsent(pending)
        if self._ledger_writer is not None:
            self._ledger_writer.rewrite()
        self._sink.flush(30)  # on the broker before a partition can change hands
        if self._bounds is not None:  # partitions read to their end are read again
            self._done.clear()
            self._consumer.resume([TopicPartition(*key) for key in self._bounded])
        for tp in self._cycle.positions(self._partitions.keys(), self._bounds):
            try:
                self._consumer.seek(tp)
            except KafkaException as error:
                # Not re-readable in place: stop uncommitted; a restart re-reads from the
                # committed offsets, and the ledger skips what was accepted meanwhile.
                raise TransactionFatal(f"rewind of {tp.topic}[{tp.partition}]: {error}") from None
        if self._sessions is not None:  # sessions stay; their unsettled signals go again
            self._derived(self._sessions.aborted())
        log.warning("rewound to the committed offsets", partitions=len(self._partitions))

    def _commit(self, *, asynchronous: bool, only: set[TopicPartitionKey] | None = None) -> None:
        self._last_commit = time.monotonic()
        self.ledger.expire()
        if not self._commit_cycle(asynchronous=asynchronous, only=only):
            self._rewind()

    def _commit_cycle(self, *, asynchronous: bool, only: set[TopicPartitionKey] | None) -> bool:
        """The commit cycle, with the session changelog's changes in its transaction."""
        sessions = self._sessions
        if sessions is not None and self._txn is None:
            self._write_changelog_plain(sessions)
        elif sessions is not None:
            sessions.write(self._sink.produce)
        landed = self._cycle.commit(asynchronous=asynchronous, only=only)
        if landed and sessions is not None:
            sessions.committed()
        return landed

    def _write_changelog_plain(self, sessions: SessionHooks) -> None:
        """Without transactions: the changelog's changes on the broker before the
        offsets. One that is not (refused, or not acknowledged in 30 s) stops the consumer
        uncommitted: committing past it would lose the sessions' state on a restart."""
        failed: list[KafkaError] = []

        def delivered(error: KafkaError | None, _: object) -> None:
            if error is not None:
                failed.append(error)

        if not sessions.write(self._sink.produce, delivered):
            return
        left = self._sink.flush(30)
        if failed or left:
            self._sink.fatal = True  # nothing is committed any more
            cause = f"{failed[0].str()} [{failed[0].name()}]" if failed else "no answer in 30 s"
            raise ChangelogUnwritable(
                f"session changelog {sessions.topic!r}: {len(failed) or left} record(s) not "
                f"written ({cause}); {UNCOMMITTED}"
            )

    # --- stop ----------------------------------------------------------------------------

    def _drain(self, timeout_s: float) -> bool:
        """Send everything buffered and wait for it; False if the time ran out."""
        self._batcher.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._dispatch()
            self._sink.poll()
            self._dead_letters.retry_failed()
            self._collect_reports(block_s=0.05)
            if self._deliveries.in_flight == 0 and not self._batcher.ready:
                break
        if not self._sink.fatal:
            self._sink.flush(max(0.0, deadline - time.monotonic()))
        self._collect_reports()
        return self._deliveries.in_flight == 0 and not self._batcher.ready

    def _shutdown(self) -> None:
        log.info("stopping: draining in-flight batches")
        if self._sink.fatal:  # nothing more can be recorded: send nothing more
            self._partitions.retire(self._partitions.keys())
            self._batcher.clear()
            self._abandon.set()
        drained = self._drain(self._settings.drain_timeout_s)
        if not drained:
            log.warning("drain timed out: unfinished records stay uncommitted")
            self._abandon.set()
            self._collect_reports(block_s=1.0)
        try:
            if not self._sink.fatal:
                self._commit(asynchronous=False)
        finally:
            if self._tail is not None:
                self._tail.close()  # a load under way stops at its next fetch
            self._consumer.close()  # leave the group whatever happened: hand partitions over
        self._deliveries.close()
        self._client.close()
        self._producer.flush(5)
        log.info(
            "stopped",
            consumed=self.summary.consumed,
            delivered=self.summary.delivered_total,
            dead_lettered=self.summary.dead_lettered_total,
        )
