"""Prometheus metrics of one consumer: counters, histograms and gauges read at scrape time.

Each ``PipelineMetrics`` owns its registry (several consumers can live in one test
process). The hot path only calls ``inc()`` on pre-built children (no label lookup per
event); gauges of the loop's state (in-flight batches, buffered bytes, paused
partitions) are functions evaluated when Prometheus scrapes, so they cost nothing
while consuming. Consumer lag comes from librdkafka's statistics callback. The
standard ``process_*`` (CPU, memory, open files) and ``python_info`` collectors and a
``connect_signals_build_info`` gauge (versions as labels) are in every registry.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, Final

import orjson
from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from pipeline import __version__
from pipeline.signals.outcomes import Reason

PREFIX: Final = "connect_signals"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

#: (topic, partition) -> the offset the last landed commit carried
CommittedOffsets = Mapping[tuple[str, int], int]

#: Outcomes of one createSignals attempt: delivery's verdicts (pipeline.connect.client
#: Verdict) plus transport failures and an exception inside the attempt ("error").
CALL_OUTCOMES: Final = (
    "ok",
    "partial",
    "rejected",
    "rejected_unlocated",
    "accepted_some",
    "retryable",
    "unknown",
    "timeout",
    "network_error",
    "error",
)
#: Outcomes after which delivery backs off and sends the batch (or, after
#: accepted_some, what Connect did not accept) again.
TRANSIENT_OUTCOMES: Final = frozenset(
    {"retryable", "unknown", "timeout", "network_error", "error", "accepted_some"}
)
BATCH_SIZE_BUCKETS: Final = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
CALL_SECONDS_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
E2E_SECONDS_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class PipelineMetrics:
    """Every metric of the pipeline, registered in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # the default registry's process and platform collectors, in this one too
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR):
            r.register(collector)
        build = Gauge(
            f"{PREFIX}_build_info",
            "Versions of this pipeline and its Kafka client; always 1.",
            ["version", "python_version", "confluent_kafka_version", "librdkafka_version"],
            registry=r,
        )
        build.labels(*build_labels()).set(1)
        self.consumed = Counter(f"{PREFIX}_events_consumed", "Records read from Kafka.", registry=r)
        self.delivered = Counter(
            f"{PREFIX}_events_delivered", "Signals accepted by Connect.", registry=r
        )
        dead = Counter(
            f"{PREFIX}_events_dead_lettered",
            "Records written to the dead-letter topic (acknowledged), by reason.",
            ["reason"],
            registry=r,
        )
        self.dead_lettered = {str(reason): dead.labels(str(reason)) for reason in Reason}
        self.dropped = Counter(
            f"{PREFIX}_events_dropped",
            "Records deliberately not delivered (PIPELINE_OUT_OF_TIER=drop).",
            registry=r,
        )
        self.skipped = Counter(
            f"{PREFIX}_events_skipped",
            "Records skipped because the delivery ledger shows them delivered already.",
            registry=r,
        )
        calls = Counter(
            f"{PREFIX}_api_calls", "createSignals attempts, by outcome.", ["outcome"], registry=r
        )
        self.api_calls = {outcome: calls.labels(outcome) for outcome in CALL_OUTCOMES}
        self._api_calls_family = calls
        self.api_retries = Counter(
            f"{PREFIX}_api_retries",
            "createSignals attempts that failed transiently; the batch is sent again.",
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size_signals",
            "Signals per createSignals call.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.call_seconds = Histogram(
            f"{PREFIX}_api_call_duration_seconds",
            "Duration of one createSignals attempt.",
            buckets=CALL_SECONDS_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            f"{PREFIX}_end_to_end_latency_seconds",
            "From an event's eventTime to Connect's acceptance; one sample per delivered "
            "batch (its first, longest-waiting signal).",
            buckets=E2E_SECONDS_BUCKETS,
            registry=r,
        )
        self.in_flight_batches = Gauge(
            f"{PREFIX}_in_flight_batches", "createSignals calls in flight.", registry=r
        )
        self.call_concurrency = Gauge(
            f"{PREFIX}_call_concurrency",
            "createSignals calls allowed in flight now (adaptive: 1 to the maximum).",
            registry=r,
        )
        self.buffered_bytes = Gauge(
            f"{PREFIX}_buffered_bytes",
            "Event bytes read but not yet finished (batched, in flight, dead-lettering).",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            f"{PREFIX}_assigned_partitions", "Partitions assigned to this member.", registry=r
        )
        self.paused_partitions = Gauge(
            f"{PREFIX}_paused_partitions", "Assigned partitions paused by backpressure.", registry=r
        )
        self.consumer_lag = Gauge(
            f"{PREFIX}_consumer_lag",
            "Records behind the end of each fetched partition (librdkafka statistics).",
            ["topic", "partition"],
            registry=r,
        )
        self.last_poll = Gauge(
            f"{PREFIX}_last_poll_timestamp_seconds",
            "When the poll loop last iterated (Unix time).",
            registry=r,
        )
        self.api_failing = Gauge(
            f"{PREFIX}_api_failing", "1 while createSignals calls keep failing.", registry=r
        )
        self.dead_letter_write_failures = Counter(
            f"{PREFIX}_dead_letter_write_failures",
            "Dead-letter writes that failed (written again) or were refused (the consumer "
            "stops uncommitted).",
            registry=r,
        )
        self.committed_lag = Gauge(
            f"{PREFIX}_committed_lag",
            "Records after the last committed offset of each fetched partition: what a "
            "restart reads again (librdkafka statistics and this consumer's commits).",
            ["topic", "partition"],
            registry=r,
        )
        self._ledger_evicted: Callable[[], float] = lambda: 0
        self._committed: Callable[[], CommittedOffsets] = dict
        r.register(_ScrapeCounters(self))
        self._lag_labels: set[tuple[str, str]] = set()
        self._committed_labels: set[tuple[str, str]] = set()

    # --- hooks of the consumer (cheap: no label lookups per event) ---------------------------

    def observe_call(self, outcome: str, seconds: float, signals: int) -> None:
        """One createSignals attempt (delivery's ``on_call`` hook)."""
        child = self.api_calls.get(outcome)
        if child is None:  # an outcome added later to delivery: still counted
            child = self.api_calls[outcome] = self._api_calls_family.labels(outcome)
        child.inc()
        self.call_seconds.observe(seconds)
        self.batch_size.observe(signals)
        if outcome in TRANSIENT_OUTCOMES:  # counted now, not when the batch settles
            self.api_retries.inc()

    def observe_delivered(self, count: int, first_fragment: bytes | None) -> None:
        """A settled batch: ``count`` accepted; latency sampled from its first signal."""
        if count:
            self.delivered.inc(count)
        if first_fragment is not None:
            latency = event_latency_s(first_fragment, time.time())
            if latency is not None:
                self.end_to_end_seconds.observe(latency)

    def watch(
        self,
        *,
        in_flight: Callable[[], float],
        buffered_bytes: Callable[[], float],
        assigned: Callable[[], float],
        paused: Callable[[], float],
        api_failing: Callable[[], float],
        ledger_evicted: Callable[[], float] | None = None,
        committed: Callable[[], CommittedOffsets] | None = None,
        concurrency: Callable[[], float] | None = None,
    ) -> None:
        """Gauges of the loop's state, read only when scraped (``committed``: when
        librdkafka's statistics arrive, in the poll thread that commits)."""
        self.in_flight_batches.set_function(in_flight)
        self.buffered_bytes.set_function(buffered_bytes)
        self.assigned_partitions.set_function(assigned)
        self.paused_partitions.set_function(paused)
        self.api_failing.set_function(api_failing)
        if concurrency is not None:
            self.call_concurrency.set_function(concurrency)
        if ledger_evicted is not None:
            self._ledger_evicted = ledger_evicted
        if committed is not None:
            self._committed = committed

    def on_statistics(self, stats: dict[str, Any]) -> None:
        """librdkafka's statistics (``stats_cb``, parsed): read and committed lag per
        partition."""
        self._lag_labels = _set_each(self.consumer_lag, self._lag_labels, partition_lags(stats))
        self._committed_labels = _set_each(
            self.committed_lag, self._committed_labels, committed_lags(stats, self._committed())
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ScrapeCounters(Collector):
    """Counters kept as plain integers elsewhere, read when Prometheus scrapes."""

    def __init__(self, metrics: PipelineMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            f"{PREFIX}_ledger_evicted",
            "Ledger keys evicted to stay under PIPELINE_LEDGER_MAX_KEYS (a signal of an "
            "evicted key read again is sent again).",
            value=self._metrics._ledger_evicted(),
        )


def _set_each(
    gauge: Gauge,
    before: set[tuple[str, str]],
    values: Iterable[tuple[tuple[str, str], int]],
) -> set[tuple[str, str]]:
    """Set a per-partition gauge; partitions no longer reported are removed."""
    now = dict(values)
    for labels in before - now.keys():
        gauge.remove(*labels)
    for labels, value in now.items():
        gauge.labels(*labels).set(value)
    return set(now)


def build_labels() -> tuple[str, str, str, str]:
    """(pipeline, Python, confluent-kafka, librdkafka) versions."""
    import confluent_kafka

    return (
        __version__,
        platform.python_version(),
        confluent_kafka.version()[0],
        confluent_kafka.libversion()[0],
    )


def partition_lags(stats: dict[str, Any]) -> Iterable[tuple[tuple[str, str], int]]:
    """(topic, partition) -> lag from a librdkafka statistics object.

    Only partitions this member fetches. librdkafka's ``consumer_lag`` (watermark minus
    committed offset) when it knows it; it does not see offsets committed inside a
    transaction (the ledger's mode), so then the records between the application's
    position and the last stable offset: what is not read yet.
    """
    for topic, info in (stats.get("topics") or {}).items():
        for partition, p in (info.get("partitions") or {}).items():
            if partition == "-1" or p.get("fetch_state") in (None, "none", "stopped"):
                continue
            lag = p.get("consumer_lag", -1)
            if not (isinstance(lag, int) and lag >= 0):
                end, position = p.get("ls_offset", -1), p.get("app_offset", -1)
                if not (isinstance(end, int) and isinstance(position, int)):
                    continue
                if end < 0 or position < 0:
                    continue
                lag = max(0, end - position)
            yield (topic, partition), lag


def committed_lags(
    stats: dict[str, Any], committed: CommittedOffsets
) -> Iterable[tuple[tuple[str, str], int]]:
    """(topic, partition) -> records after the committed offset, for fetched partitions.

    The end is the last stable offset (what a read_committed consumer can read; the
    high watermark where there is none). The committed offset is this consumer's last
    landed commit, else librdkafka's ``committed_offset`` (fetched on assignment; it
    does not see offsets committed inside a transaction). A transactional producer's
    last commit marker can count as one record.
    """
    for topic, info in (stats.get("topics") or {}).items():
        for partition, p in (info.get("partitions") or {}).items():
            if partition == "-1" or p.get("fetch_state") in (None, "none", "stopped"):
                continue
            end = p.get("ls_offset", -1)
            if not (isinstance(end, int) and end >= 0):
                end = p.get("hi_offset", -1)
            offset = committed.get((topic, int(partition)))
            if offset is None:
                offset = p.get("committed_offset", -1)
            if isinstance(end, int) and isinstance(offset, int) and end >= 0 and offset >= 0:
                yield (topic, partition), max(0, end - offset)


def event_latency_s(fragment: bytes, now_s: float) -> float | None:
    """Seconds since the signal's ``signalTimestamp`` (the event's eventTime), or None."""
    try:
        stamp = orjson.loads(fragment)["signalContent"]["signalTimestamp"]
        return max(0.0, now_s - datetime.fromisoformat(stamp).timestamp())
    except (ValueError, KeyError, TypeError):
        return None
