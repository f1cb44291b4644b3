"""The consumer loop: topics -> decode/validate/map -> batches -> createSignals.

    consume ─> process ─> ledger? ─> batch ─> deliver (threads) ─> settle ─> finish ─> commit
                  └──────> dead-letter (acked) ───────────────────────────> finish

One thread polls Kafka and owns all bookkeeping; the collaborators each have one job:
``Partitions`` (a generation per assignment), ``InFlight`` (keys on their way),
``Batcher``, ``Deliveries`` (the HTTP threads), ``DeadLetterWriter``, ``LedgerWriter``,
``CommitCycle``, ``FlowControl``. An offset is committed only when every record before it
in its partition generation is delivered, dead-lettered (write acknowledged), skipped
or deliberately dropped.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Final

import structlog
from confluent_kafka import KafkaError, Message

from pipeline.codec.avro import SchemaRegistryUnavailable
from pipeline.config import Settings
from pipeline.connect.client import encode_signal
from pipeline.connect.concurrency import AdaptiveConcurrency
from pipeline.kafka.batcher import Batcher
from pipeline.kafka.commit_cycle import CommitCycle
from pipeline.kafka.dead_letter_writer import DeadLetterWriter
from pipeline.kafka.deliveries import Deliveries
from pipeline.kafka.endings import RecordEndings
from pipeline.kafka.flow import FlowControl
from pipeline.kafka.group_join import JoiningConsumer
from pipeline.kafka.ledger_index import LedgerIndex
from pipeline.kafka.ledger_tail import LedgerTail
from pipeline.kafka.ledger_writer import LedgerWriter
from pipeline.kafka.lifecycle import ConsumerLifecycle
from pipeline.kafka.partition_state import InFlight, Partitions, PartitionState
from pipeline.kafka.producer_sink import ProducerSink
from pipeline.kafka.records import Bounds, Pending, RecordOrigin, RunSummary, TopicPartitionKey
from pipeline.kafka.runner import Clients, build_clients, consumer_config, producer_config
from pipeline.kafka.session_hooks import Emit, build_session_hooks
from pipeline.kafka.stops import ConsumerStopped
from pipeline.kafka.transactions import Transactions
from pipeline.ops.health import HealthState
from pipeline.ops.metrics import PipelineMetrics
from pipeline.signals.mapping import MappedSignal
from pipeline.signals.outcomes import Reason, Rejection
from pipeline.signals.processor import EventProcessor

__all__ = [
    "Bounds",
    "Pending",
    "RecordOrigin",
    "RunSummary",
    "SignalConsumer",
    "consumer_config",
    "producer_config",
]

log = structlog.get_logger("pipeline.kafka.consumer")

CONSUME_BATCH: Final = 500
#: the longest the loop waits for a record (its other work runs at least this often)
POLL_S: Final = 0.1
LOAD_POLL_S: Final = 0.01  # while ledger tails load: their partitions wait on it


class SignalConsumer(RecordEndings, ConsumerLifecycle):
    """One member of the consumer group. ``run()`` blocks until ``stop()``.

    The loop and the record path are here; how records end (Connect's answers, the
    ledger, dead letters) is ``RecordEndings``'; start, rebalances, the rewind after an
    aborted transaction and the shutdown are ``ConsumerLifecycle``'s.
    """

    def __init__(
        self,
        settings: Settings,
        processor: EventProcessor,
        metrics: PipelineMetrics | None = None,
        *,
        bounds: Bounds | None = None,
        origin: RecordOrigin | None = None,
        clients: Clients | None = None,
        joined: JoiningConsumer | None = None,
    ) -> None:
        self._settings = settings
        self._bounds = bounds
        self._origin = origin or RecordOrigin()
        self._own_origin = type(self._origin) is RecordOrigin  # ledger source = the record
        self._processor = processor
        self._stop_requested = threading.Event()
        self.summary = RunSummary()
        self.metrics = metrics or PipelineMetrics()
        self._api_failing = threading.Event()
        self._abandon = threading.Event()  # shutdown drain timed out: stop retrying
        self.health = HealthState(settings.liveness_timeout_s, api_failing=self._api_failing.is_set)
        clients = clients or build_clients(
            settings,
            bounded=bounds is not None,
            on_stats=self._on_stats,
            on_call=self.metrics.observe_call,
            on_failing=self._on_failing,
            stop=self._abandon,
            joined=joined,
        )
        self._consumer, self._producer, self._client = clients
        self._sink = ProducerSink(self._producer, transactional=settings.transactions)
        self._txn = Transactions(self._producer, self._consumer) if settings.transactions else None
        retention_ms = int(settings.ledger_retention_hours * 3_600_000)
        self.ledger = LedgerIndex(settings.ledger_max_keys, retention_ms)
        self._tail: LedgerTail | None = None  # the ledger's reads, once prepared
        self._ledger_writer: LedgerWriter | None = None
        self._partitions = Partitions()
        self._in_flight = InFlight()
        self._ledger_enabled = settings.ledger_enabled
        self._batcher = Batcher(
            settings.batch_max_signals, settings.batch_max_bytes, settings.linger_ms / 1000
        )
        adaptive = None
        if settings.adaptive_concurrency:
            adaptive = AdaptiveConcurrency(settings.max_in_flight_batches)
            self._client.on_answer = adaptive.observe
        self._deliveries = Deliveries(
            self._client.deliver, settings.max_in_flight_batches, adaptive
        )
        dlq_max_bytes = int(producer_config(settings).get("message.max.bytes", 1_000_000))
        self._dead_letters = DeadLetterWriter(
            self._sink,
            settings.dlq_topic,
            settings.group_id,
            dlq_max_bytes,
            self._origin,
            finished=self._finish,
            counted=self._count_dead_letters,
            write_failed=self.metrics.dead_letter_write_failures.inc,
        )
        self._cycle = CommitCycle(
            self._consumer, self._sink, self._txn, self._partitions, self._dead_letters, None
        )
        self._flow = FlowControl(
            self._consumer,
            settings.max_buffered_bytes,
            self._reading,
            initial_backoff_ms=settings.retry_initial_backoff_ms,
            max_backoff_ms=settings.retry_max_backoff_ms,
        )
        self._sessions = build_session_hooks(
            settings,
            self.metrics.registry,
            bounded=bounds is not None,
            redrive=not self._own_origin,
        )
        self._buffered_bytes = 0
        self._retirements_seen = 0  # Partitions.retirements at the last dispatch
        self._suspect_batches = 0  # batches to check for a retired generation's records
        self._bounded: set[TopicPartitionKey] = set()  # bounded mode: partitions to read
        self._done: set[TopicPartitionKey] = set()  # bounded mode: partitions read to end
        self._ever_assigned = False
        self._last_commit = time.monotonic()
        self._last_record = time.monotonic()
        self.metrics.watch(
            in_flight=lambda: self._deliveries.in_flight,
            concurrency=lambda: self._deliveries.limit,
            buffered_bytes=lambda: self._buffered_bytes,
            assigned=lambda: len(self._reading()),
            paused=self._flow.paused_count,
            api_failing=self._api_failing.is_set,
            ledger_evicted=lambda: self.ledger.evicted,
            committed=lambda: self._cycle.last_committed,
        )

    # --- public ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop polling, drain and commit (signal-handler safe)."""
        self._stop_requested.set()

    @property
    def ledger_tail(self) -> LedgerTail | None:
        """The ledger's reads (None before ``run`` prepared it, or with the ledger off)."""
        return self._tail

    @property
    def buffered_bytes(self) -> int:
        """Bytes of records read and not finished (what PIPELINE_MAX_BUFFERED_BYTES bounds)."""
        return self._buffered_bytes

    @property
    def idle(self) -> bool:
        """Nothing buffered, in flight or waiting for a dead-letter acknowledgement."""
        return (
            self._deliveries.in_flight == 0
            and self._batcher.empty
            and self._partitions.unfinished == 0
        )

    def run(self, *, stop_after_idle_s: float | None = None) -> RunSummary:
        """Consume until stopped (or idle that long, for the demo and tests).

        With ``bounds`` (replay, redrive): read the given partitions up to their end
        offsets, then stop.
        """
        try:
            self._prepare()
            log.info("consumer started", topics=self._settings.source_topics)
            while not self._stop_requested.is_set():
                self._step()
                if self._bounds is not None and not self._reading() and self.idle:
                    break
                if (
                    stop_after_idle_s is not None
                    and self._ever_assigned
                    and self.idle
                    and time.monotonic() - self._last_record > stop_after_idle_s
                ):
                    break
        except ConsumerStopped as error:
            self._sink.fatal = True
            log.error("stopping uncommitted", error=str(error))
            raise
        finally:
            self._shutdown()
        return self.summary

    # --- the loop ------------------------------------------------------------------------

    def _step(self) -> None:
        self._ledger_loads()  # before the poll: partitions held while their ledger tails load
        messages = self._poll()
        self._flow.after_poll()
        self.health.beat()
        if messages:
            self.metrics.consumed.inc(len(messages))
            if self._handle(messages):
                self._last_record = time.monotonic()  # one clock read per batch, not per record
        if self._sessions is not None:  # quiet partitions' sessions expire by the wall clock
            held = self._reading() if self._flow.paused else self._flow.held
            self._derived(self._sessions.tick(held))
        self._sink.poll()
        self._dead_letters.retry_failed()
        self._collect_reports()
        self._batcher.close_if_due()
        self._dispatch()
        self._flow.apply(self._buffered_bytes, self._api_failing.is_set())
        due = time.monotonic() - self._last_commit >= self._settings.commit_interval_ms / 1000
        if due or self._sink.abort_requested:
            self._commit(asynchronous=True)

    def _poll(self) -> list[Message]:
        """What librdkafka holds, at once; else wait for the next record, at most until
        the open batch is due (or ``POLL_S``).

        ``consume(n, timeout)`` returns only with n records or at the timeout: at a
        low rate one call would hold every record it read for the whole timeout."""
        messages = self._consumer.consume(CONSUME_BATCH, timeout=0)
        if messages:
            return messages
        due = self._batcher.due_in()
        timeout = POLL_S if due is None else min(POLL_S, due)
        if self._tail is not None and self._tail.waiting:
            timeout = min(timeout, LOAD_POLL_S)  # notice a load's end at once (first ack)
        if timeout <= 0:
            return messages
        messages = self._consumer.consume(1, timeout=timeout)
        if messages:  # and whatever came with it
            messages.extend(self._consumer.consume(CONSUME_BATCH - 1, timeout=0))
        return messages

    def _handle(self, messages: list[Message]) -> bool:
        """The records of one ``consume()``: each decoded, mapped, tracked, checked against
        the ledger, claimed and encoded (while its signal is still in the CPU's cache),
        then the batch's signals batched at once. True when any was a record (not an
        error or an end-of-partition event).

        The record path runs for every event: the per-record work stays in this loop
        (locals, the partition looked up once per run of its records) rather than in a
        method call per record and step."""
        get_state = self._partitions.get
        flow = self._flow
        held = flow.held
        bounds = self._bounds
        own = self._own_origin
        process = self._processor.process
        sessions = self._sessions
        admission = self._admission
        max_fragment = self._batcher.max_fragment_bytes
        keys: list[str] = []
        fragments: list[bytes] = []
        refs: list[Pending] = []
        derived: list[Emit] = []
        records = consumed = buffered = 0  # records: any but errors; consumed: ours, handled
        topic: str | None = None
        partition = -1
        key: TopicPartitionKey = ("", -1)
        state: PartitionState | None = None
        for message in messages:
            if message.error() is not None:
                self._kafka_error(message)
                continue
            records += 1
            offset = message.offset()
            assert offset is not None
            if message.partition() != partition or message.topic() != topic:
                topic, partition = message.topic() or "", message.partition() or 0
                key = (topic, partition)
                state = get_state(key)
                if key in held:
                    state = None  # fetched before a hold: read again after it
            if state is None:
                continue  # not ours (any more), or held
            if bounds is not None and (key in self._done or offset >= bounds.end[key]):
                self._reached_end(key)
                continue
            value = message.value()
            wanted = own or self._origin.wanted(message)  # the own: every record
            if wanted:
                try:  # None for a record without headers (one C call, nothing else)
                    headers = message.headers()
                except (UnicodeDecodeError, ValueError):  # a name not UTF-8: the value decides
                    headers = None
                try:
                    outcome = process(value, headers)
                except SchemaRegistryUnavailable as unavailable:
                    flow.hold(key, offset, unavailable)
                    state = None  # the rest of this partition's records: read again
                    continue
                if flow.attempts:  # a partition is backing off: this one's backoff starts over
                    flow.served(key)
            if bounds is not None and offset + 1 >= bounds.end[key]:
                self._reached_end(key)  # the last one: handled below, nothing after it
            state.offsets.track(offset)
            size = len(value or b"") + len(message.key() or b"")
            buffered += size
            consumed += 1
            if not wanted:
                self.summary.filtered += 1
                self._finish(Pending(message, size, "", state, offset))
            elif isinstance(outcome, MappedSignal):
                ledger_partition = partition if own else self._origin.partition(message)
                signal_key = outcome.idempotency_key
                pending = Pending(
                    message, size, outcome.signal_type, state, offset, signal_key,
                    ledger_partition,
                )  # fmt: skip
                if sessions is not None:  # before the ledger check: a delivered event counts
                    derived.extend(sessions.observe(message, outcome) or ())
                fragment = admission(outcome, pending)
                if fragment is None:
                    continue  # skipped (the ledger), or waiting for the same key on its way
                fragment_size = len(fragment)
                if fragment_size > max_fragment:
                    self._add_to_batch(pending, fragment)  # dead-lettered there
                    continue
                # the fragment counts against PIPELINE_MAX_BUFFERED_BYTES (``_add_to_batch``)
                pending.size += fragment_size
                buffered += fragment_size
                keys.append(signal_key)
                fragments.append(fragment)
                refs.append(pending)
            elif isinstance(outcome, Rejection):
                rejected = Pending(message, size, outcome.signal_type, state, offset)
                self._dead_letter(rejected, outcome)
            else:
                self._drop(Pending(message, size, outcome.signal_type, state, offset), outcome)
        self._buffered_bytes += buffered
        self.summary.consumed += consumed
        if keys:
            self._batcher.add_many(keys, fragments, refs)
        if derived:
            self._derived(derived)
        return records > 0

    def _kafka_error(self, message: Message) -> None:
        error = message.error()
        assert error is not None
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("kafka error", error=str(error))
        elif self._bounds is not None:
            self._reached_end((message.topic() or "", message.partition() or 0))

    def _admit(self, signal: MappedSignal, pending: Pending) -> None:
        """Skip it (the ledger), wait for the same key on its way, or batch it."""
        fragment = self._admission(signal, pending)
        if fragment is not None:
            self._add_to_batch(pending, fragment)

    def _admission(self, signal: MappedSignal, pending: Pending) -> bytes | None:
        """The signal's JSON fragment to batch, or None: skipped (already accepted, the
        ledger) or waiting for the same key on its way. Ledger off: no skips, no waits."""
        if not self._ledger_enabled:
            return encode_signal(signal.signal)
        if self.ledger.has(pending.key):
            self._skip(pending)
            return None
        fragment = encode_signal(signal.signal)
        if not self._in_flight.claim(pending.key):
            self._in_flight.wait(pending.key, (pending, fragment))
            return None
        return fragment

    def _derived(self, emits: list[Emit]) -> None:
        """Derived abandonment signals join the record path: ledger, batch, dead letters."""
        for emit in emits:
            message = emit.message
            state = self._partitions.get((message.topic() or "", message.partition() or 0))
            if state is None:
                continue  # revoked: the partition's new owner sends what is pending
            offset = message.offset() or 0
            pending = Pending(message, 0, emit.signal_type, state, offset, on_finish=emit.settled)
            pending.ledger_partition = state.key[1]
            if isinstance(emit.outcome, MappedSignal):
                pending.key = emit.outcome.idempotency_key
                self._admit(emit.outcome, pending)
            else:
                self._dead_letter(pending, emit.outcome)

    def _add_to_batch(self, pending: Pending, fragment: bytes) -> None:
        size = len(fragment)
        if size > self._batcher.max_fragment_bytes:  # too large even alone in a batch
            limit = self._settings.batch_max_bytes
            rule = f"the signal is {size} bytes, over PIPELINE_BATCH_MAX_BYTES={limit}"
            self._in_flight.settle(pending.key)
            self._dead_letter(pending, Rejection.single(Reason.VALIDATION, "", rule))
            return
        # The JSON fragment (~4 times the Avro bytes) is most of what a buffered signal
        # holds: it counts against PIPELINE_MAX_BUFFERED_BYTES until the record finishes.
        pending.size += size
        self._buffered_bytes += size
        self._batcher.add(pending.key, fragment, pending)

    def _dispatch(self) -> None:
        if self._sink.fatal:
            return  # nothing sent now could be recorded in the ledger
        ready = self._batcher.ready
        retirements = self._partitions.retirements
        if retirements != self._retirements_seen:
            # A generation retired since the last look: the batches formed or forming
            # now may hold its records; those formed after them cannot.
            self._retirements_seen = retirements
            self._suspect_batches = len(ready) + self._batcher.open
        while ready and self._deliveries.has_room:
            batch = ready.popleft()
            if not self._suspect_batches:
                self._deliveries.send(batch)
                continue
            self._suspect_batches -= 1
            if any(p.state.retired for p in batch.refs):  # never send a retired partition's
                keep = [i for i, p in enumerate(batch.refs) if not p.state.retired]
                for pending in batch.refs:
                    if pending.state.retired:
                        self._unsent(pending)
                if not keep:
                    continue
                batch = batch.subset(keep)
            self._deliveries.send(batch)

    def _collect_reports(self, block_s: float = 0.0) -> None:
        for report in self._deliveries.reports(block_s):
            self._settle(report)

    # --- flow, commits, rebalances -------------------------------------------------------

    def _on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        self.metrics.on_statistics(stats)
        self.health.on_statistics(stats)

    def _on_failing(self, failing: bool) -> None:
        if failing:
            self._api_failing.set()
        else:
            self._api_failing.clear()

    def _reading(self) -> list[TopicPartitionKey]:
        """Assigned partitions still read (bounded mode: not yet read to their end)."""
        keys = self._partitions.keys()
        return [k for k in keys if k not in self._done] if self._done else keys
