"""The consumer loop: topics -> decode/validate/map -> batches -> createSignals.

One thread polls Kafka and owns all bookkeeping (offsets, batches, the dead-letter
producer, commits); a pool of threads runs the HTTP calls and hands back reports
through a queue. An offset is committed only when every record before it in its
partition is delivered, dead-lettered (write acknowledged) or deliberately dropped.

    consume ─> process ─> batch ─> deliver (threads) ─> finish ─> commit
                  └──────> dead-letter (acked) ─────────> finish
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Final

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from pipeline.codec.avro import SchemaRegistryUnavailable
from pipeline.config import Settings
from pipeline.connect.client import Batch, ConnectClient, DeliveryReport, RetryPolicy, encode_signal
from pipeline.kafka.dead_letter_topic import ensure_dead_letter_topic
from pipeline.kafka.dead_letters import (
    MAX_LEVEL,
    Source,
    dead_letter_record,
    header_pairs,
    is_refusal,
    refused,
)
from pipeline.kafka.ledger import (
    LedgerIndex,
    LedgerLoader,
    ensure_ledger_topic,
    ledger_partition,
    ledger_value,
    source_partition_count,
    transactional_id,
)
from pipeline.kafka.offsets import PartitionOffsets
from pipeline.kafka.stops import ConsumerStopped
from pipeline.kafka.transactions import TransactionFatal, Transactions, is_fatal
from pipeline.ops.health import HealthState
from pipeline.ops.logs import redacted
from pipeline.ops.metrics import PipelineMetrics
from pipeline.signals.mapping import MappedSignal
from pipeline.signals.outcomes import Reason, Rejection
from pipeline.signals.processor import Dropped, EventProcessor

log = structlog.get_logger("pipeline.kafka.consumer")

CONSUME_BATCH: Final = 500
TopicPartitionKey = tuple[str, int]


@dataclass(slots=True)
class Pending:
    """A record on its way: what is needed to finish it or dead-letter it."""

    message: Message
    size: int
    signal_type: str
    tracker: PartitionOffsets  # its partition's, as it was when the record was read
    offset: int
    epoch: int  # records of an aborted transaction's epoch are read again
    key: str = ""  # the signal's idempotency key
    ledger_partition: int = 0  # the source partition (a redrive reads it from headers)


@dataclass(frozen=True, slots=True)
class Bounds:
    """Replay and redrive: explicit partitions, each read from start up to end (excl.)."""

    start: dict[tuple[str, int], int]
    end: dict[tuple[str, int], int]
    #: load every ledger partition (a redrive: its records come from any partition)
    whole_ledger: bool = False


class RecordOrigin:
    """Where a record came from: itself, or (in a redrive) what its DLQ headers say."""

    def wanted(self, message: Message) -> bool:
        """False: finish the record untouched (a redrive filtered by reason)."""
        return True

    def partition(self, message: Message) -> int:
        return message.partition() or 0

    def source(self, message: Message) -> tuple[Source, int]:
        """The source for dead-letter headers, and the attempt number."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        timestamp_type, timestamp = message.timestamp()
        headers, unreadable = header_pairs(message)
        source = Source(
            topic,
            partition,
            offset,
            timestamp if timestamp_type else None,
            message.key(),
            message.value(),
            tuple(headers),
            unreadable,
        )
        return source, 1


@dataclass(slots=True)
class RunSummary:
    """What one run did, for the demo's report and the tests."""

    consumed: int = 0
    delivered: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    api_calls: int = 0
    api_retries: int = 0
    skipped: int = 0  # already accepted by Connect (the ledger): never sent again
    filtered: int = 0  # a redrive's records of other reasons, left alone

    @property
    def delivered_total(self) -> int:
        return sum(self.delivered.values())

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())


def consumer_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        # consumer lag and broker state for /metrics and /readyz (kafka_config may override)
        "statistics.interval.ms": 5000,
        **settings.kafka_common(),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(100, settings.session_timeout_ms // 5),
        "queued.max.messages.kbytes": settings.fetch_queue_kbytes,
        "queued.min.messages": settings.fetch_queue_messages,
        # Producers may write in transactions: never read what they abort.
        "isolation.level": "read_committed",
    }
    if settings.group_instance_id:
        conf["group.instance.id"] = settings.group_instance_id
    return conf


def producer_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **settings.kafka_common(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,  # pipeline.kafka.ledger.PRODUCER_LINGER_MS
    }
    if settings.transactions:
        conf["transactional.id"] = transactional_id(settings)
        conf["transaction.timeout.ms"] = settings.transaction_timeout_ms
        # the commit acknowledges every record of a transaction: report failures only
        conf["delivery.report.only.error"] = True
    return conf


def _auth_value(settings: Settings) -> str | None:
    if settings.connect_api_key is None:
        return None
    key = settings.connect_api_key.get_secret_value()
    return f"{settings.connect_auth_scheme} {key}" if settings.connect_auth_scheme else key


def _header_pairs(message: Message) -> list[tuple[str, bytes]]:
    return header_pairs(message)[0]


class SignalConsumer:
    """One member of the consumer group. ``run()`` blocks until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        processor: EventProcessor,
        metrics: PipelineMetrics | None = None,
        *,
        bounds: Bounds | None = None,
        origin: RecordOrigin | None = None,
    ) -> None:
        self._settings = settings
        self._bounds = bounds
        self._origin = origin or RecordOrigin()
        self._processor = processor
        self._stop_requested = threading.Event()
        self._abandon = threading.Event()  # shutdown drain timed out: stop retrying
        self._api_failing = threading.Event()
        self.summary = RunSummary()
        self.metrics = metrics or PipelineMetrics()
        self.health = HealthState(settings.liveness_timeout_s, api_failing=self._api_failing.is_set)
        self._offsets: dict[TopicPartitionKey, PartitionOffsets] = {}
        self._assigned: set[TopicPartitionKey] = set()
        self._ever_assigned = False
        self._paused = False
        self._buffered_bytes = 0
        self._open: list[tuple[MappedSignal, bytes, Pending]] = []
        self._open_bytes = 0
        self._open_since = 0.0
        self._ready: deque[Batch] = deque()
        self._in_flight = 0
        self._reports: queue.SimpleQueue[DeliveryReport] = queue.SimpleQueue()
        self._dlq_failed: deque[tuple[Pending, Rejection]] = deque()
        # A dead letter too large for the topic goes without its value (then its key and
        # large headers, ...), else it stalls the partition: the limit, and the level
        # (``dead_letter_record``) of the records a write was refused for as too large.
        conf = producer_config(settings)
        self._dlq_max_bytes = int(conf.get("message.max.bytes", 1_000_000))
        self._dlq_level: dict[tuple[str, int, int], int] = {}
        # Partitions held while the schema registry is unavailable: resume time, attempts.
        self._held: dict[TopicPartitionKey, float] = {}
        self._hold_attempts: dict[TopicPartitionKey, int] = {}
        self._newly_assigned: list[TopicPartition] = []
        self._last_commit = time.monotonic()
        self._last_record = time.monotonic()
        kafka_logger = logging.getLogger("librdkafka")
        eof = {"enable.partition.eof": True} if bounds is not None else {}
        self._consumer = Consumer(
            {
                **consumer_config(settings),
                **eof,
                "stats_cb": self._on_stats,
                "logger": kafka_logger,
            }
        )
        self._producer = Producer({**producer_config(settings), "logger": kafka_logger})
        # --- idempotency: the ledger, one transaction per commit cycle, rewinds
        self._epoch = 0
        self._fatal = False
        self._bounded: set[TopicPartitionKey] = set()  # bounded mode: partitions to read
        self._done: set[TopicPartitionKey] = set()  # bounded mode: partitions read to end
        self._in_flight_keys: set[str] = set()  # batched or sent, not yet settled
        self._last_committed: dict[TopicPartitionKey, int] = {}
        self._revoking: set[TopicPartitionKey] = set()
        self._txn_ledger: list[tuple[int, str, int]] = []  # ledger records in the open txn
        self._txn_dead_letters: Counter[str] = Counter()  # reason -> count, in the open txn
        self._txn_dirty = False
        self._txn = Transactions(self._producer, self._consumer) if settings.transactions else None
        retention_ms = int(settings.ledger_retention_hours * 3_600_000)
        self.ledger = LedgerIndex(settings.ledger_max_keys, retention_ms)
        self._ledger_loader: LedgerLoader | None = None
        self._ledger_partitions = 1
        self.metrics.watch(
            in_flight=lambda: self._in_flight,
            buffered_bytes=lambda: self._buffered_bytes,
            assigned=lambda: len(self._assigned),
            paused=lambda: len(self._assigned) if self._paused else len(self._held),
            api_failing=lambda: self._api_failing.is_set(),
        )
        self._client = ConnectClient(
            settings.connect_url,
            settings.connect_auth_header,
            _auth_value(settings),
            timeout_s=settings.request_timeout_s,
            max_connections=settings.max_in_flight_batches,
            retry=RetryPolicy(
                settings.retry_initial_backoff_ms / 1000, settings.retry_max_backoff_ms / 1000
            ),
            stop=self._abandon,
            on_call=self._on_call,
            on_failing=self._on_failing,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=settings.max_in_flight_batches, thread_name_prefix="deliver"
        )

    # --- public ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop polling, drain and commit (signal-handler safe)."""
        self._stop_requested.set()

    @property
    def buffered_bytes(self) -> int:
        """Bytes of records read and not finished (what PIPELINE_MAX_BUFFERED_BYTES bounds)."""
        return self._buffered_bytes

    @property
    def idle(self) -> bool:
        """Nothing buffered, in flight or waiting for a dead-letter acknowledgement."""
        return (
            self._in_flight == 0
            and not self._open
            and not self._ready
            and all(o.pending == 0 for o in self._offsets.values())
        )

    def run(self, *, stop_after_idle_s: float | None = None) -> RunSummary:
        """Consume until stopped (or idle that long, for the demo and tests).

        With ``bounds`` (replay, redrive): read the given partitions up to their end
        offsets, then stop.
        """
        try:
            self._prepare_idempotency()
            if self._bounds is None:
                self._consumer.subscribe(
                    self._settings.source_topics,
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
            else:
                self._assign_bounds(self._bounds)
            log.info("consumer started", topics=self._settings.source_topics)
            while not self._stop_requested.is_set():
                self._step()
                if self._bounds is not None and not self._assigned and self.idle:
                    break
                if (
                    stop_after_idle_s is not None
                    and self._ever_assigned
                    and self.idle
                    and time.monotonic() - self._last_record > stop_after_idle_s
                ):
                    break
        except ConsumerStopped as error:
            self._fatal = True
            log.error("stopping uncommitted", error=str(error))
            raise
        finally:
            self._shutdown()
        return self.summary

    # --- idempotency: ledger, transactions, bounded reads ---------------------------------

    def _prepare_idempotency(self) -> None:
        settings = self._settings
        conf = settings.kafka_common()
        ensure_dead_letter_topic(conf, settings.dlq_topic)
        if settings.ledger_enabled:
            partitions = source_partition_count(conf, settings)
            topic = settings.ledger_topic_name
            retention_ms = self.ledger.retention_ms
            self._ledger_partitions = ensure_ledger_topic(conf, topic, partitions, retention_ms)
            self._ledger_loader = LedgerLoader(conf, topic, self.ledger)
        if self._txn is not None:
            self._txn.start()

    def _load_ledger(self, source_partitions: set[int]) -> None:
        if self._ledger_loader is not None:
            n = self._ledger_partitions
            self._ledger_loader.load({ledger_partition(p, n) for p in source_partitions})

    def _assign_bounds(self, bounds: Bounds) -> None:
        todo = {tp: start for tp, start in bounds.start.items() if start < bounds.end[tp]}
        self._done.update(tp for tp in bounds.start if tp not in todo)
        if not bounds.whole_ledger:
            self._load_ledger({p for _, p in todo})
        elif self._ledger_loader is not None:
            self._ledger_loader.load(range(self._ledger_partitions))
        self._consumer.assign([TopicPartition(t, p, start) for (t, p), start in todo.items()])
        self._bounded = set(todo)
        self._assigned.update(todo)
        self._ever_assigned = True

    def _reached_end(self, key: TopicPartitionKey) -> None:
        """Bounded mode: this partition is read up to its end offset."""
        if key in self._done:
            return
        self._done.add(key)
        self._assigned.discard(key)
        self._consumer.pause([TopicPartition(*key)])
        log.info("partition read to its end offset", partition=f"{key[0]}[{key[1]}]")

    def _skip_if_delivered(self, signal: MappedSignal, pending: Pending) -> bool:
        """Already accepted by Connect (ledger) or on its way in this process: skip it."""
        key = signal.idempotency_key
        if not self._settings.ledger_enabled:
            return False
        if key in self.ledger or key in self._in_flight_keys:
            self.summary.skipped += 1
            self.metrics.skipped.inc()
            self._finish(pending)
            return True
        self._in_flight_keys.add(key)
        return False

    def _delivered(self, pending: Pending, accepted_ms: int) -> None:
        """Connect accepted it: remember it in the ledger, and finish it.

        With transactions the record finishes at once: its offset commits in the same
        transaction as its ledger record, so neither lands without the other. Without,
        it finishes when the ledger write is acknowledged.
        """
        self.summary.delivered[pending.signal_type] += 1
        if not self._settings.ledger_enabled:
            self._finish(pending)
            return
        self._in_flight_keys.discard(pending.key)
        self.ledger.add(pending.key, accepted_ms)
        self._write_ledger(pending.ledger_partition, pending.key, accepted_ms, pending)
        if self._txn is not None:
            self._finish(pending)

    def _write_ledger(
        self, partition: int, key: str, accepted_ms: int, pending: Pending | None
    ) -> None:
        if self._txn is not None:
            self._txn_ledger.append((partition, key, accepted_ms))
            # a failed write fails the commit, which aborts and re-reads: the callback
            # only has to stop a fenced producer at its first refused write
            acknowledged: Callable[[KafkaError | None, Message], None] = self._ledger_refused
        else:

            def acknowledged(error: KafkaError | None, _: Message) -> None:
                if error is None:
                    if pending is not None:
                        self._finish(pending)
                else:
                    log.warning("ledger write failed, retrying", error=str(error))
                    self._write_ledger(partition, key, accepted_ms, pending)

        self._produce(
            self._settings.ledger_topic_name,
            partition=ledger_partition(partition, self._ledger_partitions),
            key=key.encode(),
            value=ledger_value(accepted_ms),
            on_delivery=acknowledged,
        )

    def _ledger_refused(self, error: KafkaError | None, _: Message) -> None:
        if error is not None:
            self._stop_if_fenced(error)

    def _stop_if_fenced(self, error: KafkaError) -> None:
        """A write refused because a newer instance took over: stop sending at once."""
        if is_fatal(error) and not self._fatal:
            self._fatal = True
            raise TransactionFatal(str(error))

    def _poll_producer(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports; a fatal producer error (fenced) stops the consumer."""
        try:
            self._producer.poll(timeout_s)
        except KafkaException as error:
            if self._fatal:
                return
            if is_fatal(error.args[0]):
                self._fatal = True
                raise TransactionFatal(str(error)) from None
            raise

    def _produce(self, topic: str, **kwargs: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                self._txn_dirty = True
                return
            except BufferError:
                self._poll_producer(0.1)
            except KafkaException as error:
                code = error.args[0].code()
                if (
                    self._txn is None
                    or code == KafkaError.MSG_SIZE_TOO_LARGE
                    or is_refusal(error.args[0])
                ):
                    raise  # too large: the caller sends less; refused: the caller stops
                if self._fatal:
                    return  # stopping after a fatal error: nothing can be recorded
                if is_fatal(error.args[0]):
                    self._fatal = True
                    raise TransactionFatal(str(error)) from None
                # the transaction needs an abort: commit now, which aborts and rewinds
                log.warning("produce refused", error=str(error))
                self._last_commit = 0.0
                return

    def _commit_transaction(self) -> None:
        assert self._txn is not None
        offsets = []
        for key, tracker in self._offsets.items():
            offset = tracker.committable()
            if offset is not None and offset != self._last_committed.get(key):
                offsets.append(TopicPartition(key[0], key[1], offset))
        if self._fatal or (not offsets and not self._txn_dirty):
            return
        if not self._txn_dirty:
            self._commit_offsets_only(offsets)
            return
        try:
            committed = self._txn.commit(offsets)
        except TransactionFatal:
            self._fatal = True
            raise
        if committed:
            for tp in offsets:
                self._last_committed[(tp.topic, tp.partition)] = tp.offset
            self._txn_ledger.clear()
            self._txn_dirty = False
            for reason, count in self._txn_dead_letters.items():
                self._count_dead_letters(reason, count)
            self._txn_dead_letters.clear()
        else:
            self._rewind()

    def _commit_offsets_only(self, offsets: list[TopicPartition]) -> None:
        """Offsets of records that wrote nothing (skipped by the ledger, dropped).

        Nothing produced since the last commit has to be atomic with them, so one
        OffsetCommit (checked against the group's generation, like the transactional
        one) does what an offsets-only transaction does in three round trips. It also
        sidesteps a quirk of the embedded Tansu broker, which does not apply offsets of
        a transaction that wrote no record (README, broker notes).
        """
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:  # a rebalance in progress: the next commit retries
            log.warning("commit failed", error=str(error))
            return
        for tp in offsets:
            self._last_committed[(tp.topic, tp.partition)] = tp.offset

    def _rewind(self) -> None:
        """The transaction was aborted: re-read everything after the committed offsets.

        What Connect accepted stays accepted: those keys are in the in-memory ledger and
        their ledger records are written again in the new transaction, so the records
        read again are skipped, not re-sent.
        """
        self._epoch += 1
        self._open, self._open_bytes = [], 0
        self._ready.clear()
        self._dlq_failed.clear()
        self._txn_dead_letters.clear()  # void: they are read and dead-lettered again
        rewritten, self._txn_ledger = self._txn_ledger, []
        for partition, signal_key, accepted_ms in rewritten:
            self._write_ledger(partition, signal_key, accepted_ms, None)
        deadline = time.monotonic() + self._settings.drain_timeout_s
        while self._in_flight and time.monotonic() < deadline:
            self._collect_reports(block_s=0.1)  # stale reports: ledger records only
        self._producer.flush(30)  # on the broker before a partition can change hands
        self._in_flight_keys.clear()
        self._offsets.clear()
        self._buffered_bytes = 0
        if self._bounds is not None:  # partitions read to their end are read again
            self._done.clear()
            self._assigned.update(self._bounded)
            self._consumer.resume([TopicPartition(*key) for key in self._bounded])
        positions = []
        for key in sorted(self._assigned - self._revoking):
            offset = self._last_committed.get(key)
            if offset is None and self._bounds is not None:
                offset = self._bounds.start[key]
            if offset is None:
                (committed,) = self._consumer.committed([TopicPartition(*key)], timeout=30)
                offset = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
            positions.append(TopicPartition(key[0], key[1], offset))
        for tp in positions:
            try:
                self._consumer.seek(tp)
            except KafkaException as error:
                # Not re-readable in place: stop uncommitted; a restart re-reads from the
                # committed offsets, and the ledger skips what was accepted meanwhile.
                raise TransactionFatal(f"rewind of {tp.topic}[{tp.partition}]: {error}") from None
        log.warning("rewound to the committed offsets", partitions=len(positions))

    # --- the loop ------------------------------------------------------------------------

    def _step(self) -> None:
        timeout = self._settings.linger_ms / 1000 if self._open else 0.1
        messages = self._consumer.consume(CONSUME_BATCH, timeout=min(timeout, 0.1))
        if self._newly_assigned:
            self._pause_newly_assigned()
        self.health.beat()
        if messages:
            self.metrics.consumed.inc(len(messages))
        for message in messages:
            self._handle(message)
        self._poll_producer()
        self._retry_failed_dead_letters()
        self._collect_reports()
        self._close_open_batch_if_due()
        self._dispatch()
        self._apply_backpressure()
        if self._held:
            self._release_holds()
        if time.monotonic() - self._last_commit >= self._settings.commit_interval_ms / 1000:
            self._commit(asynchronous=True)

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka error", error=str(error))
            elif self._bounds is not None:
                self._reached_end((message.topic() or "", message.partition() or 0))
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        self._last_record = time.monotonic()
        key = (topic, partition)
        if key in self._held:
            return  # fetched before the hold: read again after it
        bounds = self._bounds
        if bounds is not None and (key in self._done or offset >= bounds.end[key]):
            self._reached_end(key)
            return
        value = message.value()
        wanted = self._origin.wanted(message)
        if wanted:
            try:
                outcome = self._processor.process(value)
            except SchemaRegistryUnavailable as unavailable:
                self._hold(key, offset, unavailable)
                return
            if self._hold_attempts:
                self._hold_attempts.pop(key, None)
        if bounds is not None and offset + 1 >= bounds.end[key]:
            self._reached_end(key)  # the last one: handled below, nothing after it
        tracker = self._offsets.get(key)
        if tracker is None:
            tracker = self._offsets[key] = PartitionOffsets()
        tracker.track(offset)
        size = len(value or b"") + len(message.key() or b"")
        self._buffered_bytes += size
        self.summary.consumed += 1
        epoch = self._epoch
        if not wanted:
            self.summary.filtered += 1
            self._finish(Pending(message, size, "", tracker, offset, epoch))
            return
        if isinstance(outcome, MappedSignal):
            pending = Pending(
                message,
                size,
                outcome.signal_type,
                tracker,
                offset,
                epoch,
                outcome.idempotency_key,
                self._origin.partition(message),
            )
            if not self._skip_if_delivered(outcome, pending):
                self._add_to_batch(outcome, pending)
        elif isinstance(outcome, Rejection):
            pending = Pending(message, size, outcome.signal_type, tracker, offset, epoch)
            self._dead_letter(pending, outcome)
        else:
            pending = Pending(message, size, outcome.signal_type, tracker, offset, epoch)
            self._drop(pending, outcome)

    # --- batching ----------------------------------------------------------------------------

    def _add_to_batch(self, signal: MappedSignal, pending: Pending) -> None:
        fragment = encode_signal(signal.signal)
        limit = self._settings.batch_max_bytes
        if len(fragment) + 512 > limit:
            rule = f"the signal is {len(fragment)} bytes, over PIPELINE_BATCH_MAX_BYTES={limit}"
            self._dead_letter(pending, Rejection.single(Reason.VALIDATION, "", rule))
            return
        # The JSON fragment (~4 times the Avro bytes) is most of what a buffered signal
        # holds: it counts against PIPELINE_MAX_BUFFERED_BYTES until the record finishes.
        pending.size += len(fragment)
        self._buffered_bytes += len(fragment)
        if self._open and self._open_bytes + len(fragment) + 512 > limit:
            self._close_open_batch()
        if not self._open:
            self._open_since = time.monotonic()
        self._open.append((signal, fragment, pending))
        self._open_bytes += len(fragment) + 1
        if len(self._open) >= self._settings.batch_max_signals:
            self._close_open_batch()

    def _close_open_batch_if_due(self) -> None:
        linger = self._settings.linger_ms / 1000
        if self._open and time.monotonic() - self._open_since >= linger:
            self._close_open_batch()

    def _close_open_batch(self) -> None:
        batch = Batch(
            [s.idempotency_key for s, _, _ in self._open],
            [f for _, f, _ in self._open],
            [p for _, _, p in self._open],
        )
        self._open = []
        self._open_bytes = 0
        self._ready.append(batch)

    def _dispatch(self) -> None:
        if self._fatal:
            return  # nothing sent now could be recorded in the ledger
        while self._ready and self._in_flight < self._settings.max_in_flight_batches:
            batch = self._ready.popleft()
            self._in_flight += 1
            future = self._pool.submit(self._client.deliver, batch)
            future.add_done_callback(lambda f: self._reports.put(f.result()))

    def _collect_reports(self, block_s: float = 0.0) -> None:
        deadline = time.monotonic() + block_s
        while True:
            try:
                remaining = deadline - time.monotonic()
                report = (
                    self._reports.get(timeout=remaining)
                    if remaining > 0
                    else self._reports.get_nowait()
                )
            except queue.Empty:
                return
            self._in_flight -= 1
            self._settle(report)
            block_s = 0.0
            deadline = time.monotonic()

    def _settle(self, report: DeliveryReport) -> None:
        self.summary.api_calls += report.calls
        self.summary.api_retries += report.retries
        if report.abandoned:
            return  # not finished: the offsets stay uncommitted and are read again
        accepted_ms = int(time.time() * 1000)
        for index, pending in enumerate(report.batch.refs):
            message = report.rejected.get(index)
            if message is None:
                self._delivered(pending, accepted_ms)
            elif pending.epoch != self._epoch:
                continue  # its transaction was aborted: it is read and sent again
            else:
                rejection = Rejection.single(Reason.API_REJECTED, "", message)
                # the idempotency key: the eventId when it is plain ASCII
                rejection = replace(rejection, event_id=report.batch.keys[index])
                self._dead_letter(pending, rejection)
        delivered = len(report.batch.refs) - len(report.rejected)
        if delivered:
            self.metrics.observe_delivered(delivered, report.batch.fragments[0])

    # --- finishing records ------------------------------------------------------------------

    def _finish(self, pending: Pending) -> None:
        if pending.epoch != self._epoch:
            return  # read again since (an aborted transaction): not this record any more
        # (a partition revoked and assigned again has a new tracker: this one is orphaned)
        pending.tracker.finish(pending.offset)
        self._buffered_bytes -= pending.size

    def _drop(self, pending: Pending, dropped: Dropped) -> None:
        self.summary.dropped[f"{dropped.signal_type}:{dropped.reason}"] += 1
        self.metrics.dropped.inc()
        self._finish(pending)

    def _dead_letter(self, pending: Pending, rejection: Rejection) -> None:
        message = pending.message
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        self._in_flight_keys.discard(pending.key)
        source, attempt = self._origin.source(message)
        rejection = redacted(rejection)  # messages quote values: never a secret in headers
        coordinates = (topic, partition, offset)
        record = dead_letter_record(
            rejection,
            source,
            self._settings.group_id,
            attempt,
            self._dlq_max_bytes,
            level=self._dlq_level.get(coordinates, 0),
        )
        log.info(
            "dead-lettered",
            topic=topic,
            partition=partition,
            offset=offset,
            signal_type=pending.signal_type or None,
            event_id=rejection.event_id,
            reason=str(rejection.reason),
            field=rejection.field,
            error=rejection.message[:500],
            value_omitted_bytes=len(source.value or b"") if record.level else None,
            omitted_level=record.level or None,
        )
        dlq = self._settings.dlq_topic
        where = f"{topic}[{partition}]@{offset}"

        # With transactions, only failures are reported: the commit acknowledges the
        # write, so the record finishes at once and is counted when the commit lands.
        def acknowledged(error: KafkaError | None, _: Message) -> None:
            if self._fatal:
                return  # stopping: nothing more is recorded
            if error is not None:
                too_large = error.code() == KafkaError.MSG_SIZE_TOO_LARGE
                if too_large and record.level < MAX_LEVEL:
                    self._dlq_level[coordinates] = record.level + 1  # next time, smaller
                elif is_refusal(error) or too_large:
                    self._fatal = True
                    raise refused(dlq, error, where)
                if self._txn is not None:
                    self._stop_if_fenced(error)
                    return  # the commit fails and aborts: the record is read again
                log.warning("dead-letter write failed, retrying", error=str(error))
                self._dlq_failed.append((pending, rejection))
                return
            self._dlq_level.pop(coordinates, None)
            if pending.epoch != self._epoch:
                return
            self._count_dead_letters(str(rejection.reason), 1)
            self._finish(pending)

        try:
            self._produce(
                dlq,
                key=record.key,
                value=record.value,
                headers=list[tuple[str, str | bytes | None]](record.headers),
                on_delivery=acknowledged,
            )
        except KafkaException as error:
            kafka_error: KafkaError = error.args[0]
            if kafka_error.code() == KafkaError.MSG_SIZE_TOO_LARGE and record.level < MAX_LEVEL:
                self._dlq_level[coordinates] = record.level + 1  # larger than estimated
                self._dead_letter(pending, rejection)
                return
            self._fatal = True
            raise refused(dlq, kafka_error, where) from None
        if self._txn is not None:
            # (an omitted value stays omitted: an abort could re-read the record)
            self._txn_dead_letters[str(rejection.reason)] += 1
            self._finish(pending)

    def _count_dead_letters(self, reason: str, count: int) -> None:
        self.summary.dead_lettered[reason] += count
        self.metrics.dead_lettered[reason].inc(count)

    def _retry_failed_dead_letters(self) -> None:
        for _ in range(len(self._dlq_failed)):
            pending, rejection = self._dlq_failed.popleft()
            self._dead_letter(pending, rejection)

    # --- flow control ----------------------------------------------------------------------

    def _on_call(self, outcome: str, seconds: float, signals: int) -> None:
        self.metrics.observe_call(outcome, seconds, signals)

    def _on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        self.metrics.on_statistics(stats)
        self.health.on_statistics(stats)

    def _on_failing(self, failing: bool) -> None:
        if failing:
            self._api_failing.set()
        else:
            self._api_failing.clear()

    def _pause_newly_assigned(self) -> None:
        """Partitions assigned since the last turn follow the others' pause (or hold)."""
        new, self._newly_assigned = self._newly_assigned, []
        held = [tp for tp in new if self._paused or (tp.topic, tp.partition) in self._held]
        if held:
            self._consumer.pause(held)
            log.info("newly assigned partitions paused", partitions=len(held))

    def _apply_backpressure(self) -> None:
        limit = self._settings.max_buffered_bytes
        over = self._buffered_bytes > limit or self._api_failing.is_set()
        under = self._buffered_bytes < limit // 2 and not self._api_failing.is_set()
        partitions = [TopicPartition(t, p) for t, p in self._assigned if (t, p) not in self._held]
        if over and not self._paused and partitions:
            self._consumer.pause(partitions)
            self._paused = True
            log.info("partitions paused", buffered_bytes=self._buffered_bytes)
        elif under and self._paused:
            if partitions:
                self._consumer.resume(partitions)
            self._paused = False
            log.info("partitions resumed", buffered_bytes=self._buffered_bytes)

    # --- the schema registry unavailable: hold the partition, read the record again ------

    def _hold(self, key: TopicPartitionKey, offset: int, error: Exception) -> None:
        attempt = self._hold_attempts.get(key, 0)
        self._hold_attempts[key] = attempt + 1
        settings = self._settings
        delay_ms = min(settings.retry_max_backoff_ms, settings.retry_initial_backoff_ms << attempt)
        self._held[key] = time.monotonic() + delay_ms / 1000
        self._consumer.pause([TopicPartition(*key)])
        self._consumer.seek(TopicPartition(key[0], key[1], offset))
        log.warning(
            "schema registry unavailable: partition held, the record is read again",
            partition=f"{key[0]}[{key[1]}]",
            offset=offset,
            retry_in_s=delay_ms / 1000,
            error=str(error),
        )

    def _release_holds(self) -> None:
        now = time.monotonic()
        due = [key for key, until in self._held.items() if until <= now]
        for key in due:
            del self._held[key]
            if not self._paused and key in self._assigned:
                self._consumer.resume([TopicPartition(*key)])

    # --- commits and rebalances ----------------------------------------------------------

    def _commit(self, *, asynchronous: bool, only: set[TopicPartitionKey] | None = None) -> None:
        self._last_commit = time.monotonic()
        self.ledger.expire()
        if self._txn is not None:
            self._commit_transaction()  # every partition's offsets: never too many
            return
        offsets = []
        for key, tracker in self._offsets.items():
            if only is not None and key not in only:
                continue
            offset = tracker.to_commit()
            if offset is not None:
                offsets.append(TopicPartition(key[0], key[1], offset))
                tracker.committed = offset
        if not offsets:
            return
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as error:  # a rebalance in progress: the next commit retries
            log.warning("commit failed", error=str(error))
            for tp in offsets:
                failed = self._offsets.get((tp.topic, tp.partition))
                if failed is not None:
                    failed.committed = None

    def _drain(self, timeout_s: float) -> bool:
        """Send everything buffered and wait for it; False if the time ran out."""
        if self._open:
            self._close_open_batch()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._dispatch()
            self._poll_producer()
            self._retry_failed_dead_letters()
            self._collect_reports(block_s=0.05)
            if self._in_flight == 0 and not self._ready:
                break
        if not self._fatal:
            self._producer.flush(max(0.0, deadline - time.monotonic()))
        self._collect_reports()
        return self._in_flight == 0 and not self._ready

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Before a record of these partitions is read: what was delivered from them.
        self._load_ledger({tp.partition for tp in partitions})
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        self._ever_assigned = True
        self.health.joined = True
        self._last_record = time.monotonic()
        # pause() here has no effect (librdkafka assigns after the callback returns):
        # the loop's next turn holds them back if the others are paused
        self._newly_assigned.extend(partitions)
        log.info(
            "partitions assigned", partitions=[f"{t.topic}[{t.partition}]" for t in partitions]
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        if not self._fatal:  # fenced: nothing can be committed, hand them over as they are
            self._drain(self._settings.drain_timeout_s)
            self._revoking = revoked  # an abort now re-reads only the partitions we keep
            try:
                self._commit(asynchronous=False, only=revoked)
            finally:
                self._revoking = set()
        for key in revoked:
            self._held.pop(key, None)
            self._offsets.pop(key, None)
            self._last_committed.pop(key, None)
            self._assigned.discard(key)
        log.info("partitions revoked", partitions=sorted(f"{t}[{p}]" for t, p in revoked))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._held.pop((tp.topic, tp.partition), None)
            self._offsets.pop((tp.topic, tp.partition), None)
            self._last_committed.pop((tp.topic, tp.partition), None)
            self._assigned.discard((tp.topic, tp.partition))
        log.warning("partitions lost", count=len(partitions))

    def _shutdown(self) -> None:
        log.info("stopping: draining in-flight batches")
        if self._fatal:  # nothing more can be recorded: send nothing more
            self._open, self._open_bytes = [], 0
            self._ready.clear()
            self._abandon.set()
        drained = self._drain(self._settings.drain_timeout_s)
        if not drained:
            log.warning("drain timed out: unfinished records stay uncommitted")
            self._abandon.set()
            self._collect_reports(block_s=1.0)
        try:
            if not self._fatal:
                self._commit(asynchronous=False)
        finally:
            self._consumer.close()  # leave the group whatever happened: hand partitions over
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
        self._producer.flush(5)
        log.info(
            "stopped",
            consumed=self.summary.consumed,
            delivered=self.summary.delivered_total,
            dead_lettered=self.summary.dead_lettered_total,
        )


#: Builds the processor from settings (the decoder needs the schema store/registry).
ProcessorFactory = Callable[[Settings], EventProcessor]
