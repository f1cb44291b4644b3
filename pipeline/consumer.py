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
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from pipeline.config import Settings
from pipeline.dead_letter import Source, dead_letter_headers
from pipeline.delivery import Batch, ConnectClient, DeliveryReport, RetryPolicy, encode_signal
from pipeline.health import HealthState
from pipeline.mapping import MappedSignal
from pipeline.metrics import PipelineMetrics
from pipeline.offsets import PartitionOffsets
from pipeline.outcomes import Reason, Rejection
from pipeline.processor import Dropped, EventProcessor

log = structlog.get_logger("pipeline.consumer")

CONSUME_BATCH: Final = 500
TopicPartitionKey = tuple[str, int]


@dataclass(slots=True)
class Pending:
    """A record on its way: what is needed to finish it or dead-letter it."""

    message: Message
    size: int
    signal_type: str


@dataclass(slots=True)
class RunSummary:
    """What one run did, for the demo's report and the tests."""

    consumed: int = 0
    delivered: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    api_calls: int = 0
    api_retries: int = 0

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
        "queued.max.messages.kbytes": settings.fetch_buffer_kbytes,
        # Producers may write in transactions: never read what they abort.
        "isolation.level": "read_committed",
    }
    if settings.group_instance_id:
        conf["group.instance.id"] = settings.group_instance_id
    return conf


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **settings.kafka_common(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    }


def _auth_value(settings: Settings) -> str | None:
    if settings.connect_api_key is None:
        return None
    key = settings.connect_api_key.get_secret_value()
    return f"{settings.connect_auth_scheme} {key}" if settings.connect_auth_scheme else key


def _header_pairs(message: Message) -> list[tuple[str, bytes]]:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(k, v.encode() if isinstance(v, str) else (v or b"")) for k, v in pairs]


class SignalConsumer:
    """One member of the consumer group. ``run()`` blocks until ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        processor: EventProcessor,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self._settings = settings
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
        self._last_commit = time.monotonic()
        self._last_record = time.monotonic()
        kafka_logger = logging.getLogger("librdkafka")
        self._consumer = Consumer(
            {**consumer_config(settings), "stats_cb": self._on_stats, "logger": kafka_logger}
        )
        self._producer = Producer({**producer_config(settings), "logger": kafka_logger})
        self.metrics.watch(
            in_flight=lambda: self._in_flight,
            buffered_bytes=lambda: self._buffered_bytes,
            assigned=lambda: len(self._assigned),
            paused=lambda: len(self._assigned) if self._paused else 0,
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
    def idle(self) -> bool:
        """Nothing buffered, in flight or waiting for a dead-letter acknowledgement."""
        return (
            self._in_flight == 0
            and not self._open
            and not self._ready
            and all(o.pending == 0 for o in self._offsets.values())
        )

    def run(self, *, stop_after_idle_s: float | None = None) -> RunSummary:
        """Consume until stopped (or idle that long, for the demo and tests)."""
        self._consumer.subscribe(
            self._settings.source_topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("consumer started", topics=self._settings.source_topics)
        try:
            while not self._stop_requested.is_set():
                self._step()
                if (
                    stop_after_idle_s is not None
                    and self._ever_assigned
                    and self.idle
                    and time.monotonic() - self._last_record > stop_after_idle_s
                ):
                    break
        finally:
            self._shutdown()
        return self.summary

    # --- the loop ------------------------------------------------------------------------

    def _step(self) -> None:
        timeout = self._settings.linger_ms / 1000 if self._open else 0.1
        messages = self._consumer.consume(CONSUME_BATCH, timeout=min(timeout, 0.1))
        self.health.beat()
        if messages:
            self.metrics.consumed.inc(len(messages))
        for message in messages:
            self._handle(message)
        self._producer.poll(0)
        self._retry_failed_dead_letters()
        self._collect_reports()
        self._close_open_batch_if_due()
        self._dispatch()
        self._apply_backpressure()
        if time.monotonic() - self._last_commit >= self._settings.commit_interval_ms / 1000:
            self._commit(asynchronous=True)

    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka error", error=str(error))
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        self._last_record = time.monotonic()
        key = (topic, partition)
        tracker = self._offsets.get(key)
        if tracker is None:
            tracker = self._offsets[key] = PartitionOffsets()
        tracker.track(offset)
        value = message.value()
        size = len(value or b"") + len(message.key() or b"")
        self._buffered_bytes += size
        self.summary.consumed += 1
        outcome = self._processor.process(value)
        if isinstance(outcome, MappedSignal):
            self._add_to_batch(outcome, Pending(message, size, outcome.signal_type))
        elif isinstance(outcome, Rejection):
            self._dead_letter(Pending(message, size, ""), outcome)
        else:
            self._drop(Pending(message, size, outcome.signal_type), outcome)

    # --- batching ----------------------------------------------------------------------------

    def _add_to_batch(self, signal: MappedSignal, pending: Pending) -> None:
        fragment = encode_signal(signal.signal)
        limit = self._settings.batch_max_bytes
        if len(fragment) + 512 > limit:
            rule = f"the signal is {len(fragment)} bytes, over PIPELINE_BATCH_MAX_BYTES={limit}"
            self._dead_letter(pending, Rejection.single(Reason.VALIDATION, "", rule))
            return
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
        for index, pending in enumerate(report.batch.refs):
            message = report.rejected.get(index)
            if message is None:
                self.summary.delivered[pending.signal_type] += 1
                self._finish(pending)
            else:
                rejection = Rejection.single(Reason.API_REJECTED, "", message)
                self._dead_letter(pending, rejection)
        delivered = len(report.batch.refs) - len(report.rejected)
        if delivered:
            self.metrics.observe_delivered(delivered, report.batch.fragments[0])

    # --- finishing records ------------------------------------------------------------------

    def _finish(self, pending: Pending) -> None:
        message = pending.message
        tracker = self._offsets.get((message.topic() or "", message.partition() or 0))
        if tracker is not None:
            tracker.finish(message.offset() or 0)
        self._buffered_bytes -= pending.size

    def _drop(self, pending: Pending, dropped: Dropped) -> None:
        self.summary.dropped[f"{dropped.signal_type}:{dropped.reason}"] += 1
        self.metrics.dropped.inc()
        self._finish(pending)

    def _dead_letter(self, pending: Pending, rejection: Rejection) -> None:
        message = pending.message
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        timestamp_type, timestamp = message.timestamp()
        source = Source(
            topic,
            partition,
            offset,
            timestamp if timestamp_type else None,
            message.key(),
            message.value(),
            tuple(_header_pairs(message)),
        )
        headers = dead_letter_headers(rejection, source, self._settings.group_id)
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
        )

        def acknowledged(error: KafkaError | None, _: Message) -> None:
            if error is not None:
                log.warning("dead-letter write failed, retrying", error=str(error))
                self._dlq_failed.append((pending, rejection))
                return
            self.summary.dead_lettered[str(rejection.reason)] += 1
            self.metrics.dead_lettered[str(rejection.reason)].inc()
            self._finish(pending)

        try:
            self._producer.produce(
                self._settings.dlq_topic,
                key=source.key,
                value=source.value,
                headers=list[tuple[str, str | bytes | None]](headers),
                on_delivery=acknowledged,
            )
        except BufferError:
            self._producer.poll(0.1)
            self._dlq_failed.append((pending, rejection))

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

    def _apply_backpressure(self) -> None:
        limit = self._settings.max_buffered_bytes
        over = self._buffered_bytes > limit or self._api_failing.is_set()
        under = self._buffered_bytes < limit // 2 and not self._api_failing.is_set()
        partitions = [TopicPartition(t, p) for t, p in self._assigned]
        if over and not self._paused and partitions:
            self._consumer.pause(partitions)
            self._paused = True
            log.info("partitions paused", buffered_bytes=self._buffered_bytes)
        elif under and self._paused:
            if partitions:
                self._consumer.resume(partitions)
            self._paused = False
            log.info("partitions resumed", buffered_bytes=self._buffered_bytes)

    # --- commits and rebalances ----------------------------------------------------------

    def _commit(self, *, asynchronous: bool, only: set[TopicPartitionKey] | None = None) -> None:
        self._last_commit = time.monotonic()
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
            self._producer.poll(0)
            self._retry_failed_dead_letters()
            self._collect_reports(block_s=0.05)
            if self._in_flight == 0 and not self._ready:
                break
        self._producer.flush(max(0.0, deadline - time.monotonic()))
        self._collect_reports()
        return self._in_flight == 0 and not self._ready

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        self._ever_assigned = True
        self.health.joined = True
        self._last_record = time.monotonic()
        if self._paused:
            consumer.pause(partitions)
        log.info(
            "partitions assigned", partitions=[f"{t.topic}[{t.partition}]" for t in partitions]
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._drain(self._settings.drain_timeout_s)
        self._commit(asynchronous=False, only=revoked)
        for key in revoked:
            self._offsets.pop(key, None)
            self._assigned.discard(key)
        log.info("partitions revoked", partitions=sorted(f"{t}[{p}]" for t, p in revoked))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._offsets.pop((tp.topic, tp.partition), None)
            self._assigned.discard((tp.topic, tp.partition))
        log.warning("partitions lost", count=len(partitions))

    def _shutdown(self) -> None:
        log.info("stopping: draining in-flight batches")
        drained = self._drain(self._settings.drain_timeout_s)
        if not drained:
            log.warning("drain timed out: unfinished records stay uncommitted")
            self._abandon.set()
            self._collect_reports(block_s=1.0)
        self._commit(asynchronous=False)
        self._consumer.close()
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
