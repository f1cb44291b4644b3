"""The consumer's side of the ledger: what it loads on assignment, what it writes.

The interface the consumer core calls (and nothing else of the ledger's reading):

- ``assigned(consumer, partitions)``: on assignment, before a record of these
  partitions is handled. Reads each partition's committed offset and loads the ledger
  tail that offset can re-read (``LedgerLoader.load_tails``); sets the horizons the
  next ledger records of these partitions carry.
- ``bounded(start, end)``: a replay or redrive, before its partitions are assigned:
  loads the keys of those source ranges only.
- ``revoked(partitions)``: forget their horizons.
- ``value(...)`` and ``partition(...)``: a ledger record for a signal Connect
  accepted, and the ledger partition it goes to. The consumer writes it (in its
  transaction) exactly as before; only the bytes changed (format 2).

A live consumer's records carry a horizon; a replay's or redrive's (``backfill``)
carry none, as they are written out of source order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Final

import structlog
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry, Gauge

from pipeline.config import Settings
from pipeline.kafka.ledger import ensure_ledger_topic, source_partition_count
from pipeline.kafka.ledger_index import LedgerIndex
from pipeline.kafka.ledger_loader import LedgerLoader, LoadProgress, TailRequest
from pipeline.kafka.ledger_records import Horizons, encode, topic_id
from pipeline.ops.metrics import PREFIX

log = structlog.get_logger("pipeline.kafka.ledger")

_TIMEOUT_S: Final = 30.0
SourceKey = tuple[str, int]


class LedgerTail:
    """Loads what a consumer's partitions can re-read; encodes what it writes."""

    def __init__(self, loader: LedgerLoader, ledger_partitions: int) -> None:
        self.loader = loader
        self.ledger_partitions = ledger_partitions
        self.horizons = Horizons()
        self._topic_ids: dict[str, int] = {}

    @classmethod
    def prepare(cls, settings: Settings, index: LedgerIndex) -> LedgerTail:
        """At start: the ledger topic (created when absent) and its reader."""
        conf = settings.kafka_common()
        topic = settings.ledger_topic_name
        sources = source_partition_count(conf, settings)
        partitions = ensure_ledger_topic(conf, topic, sources, index.retention_ms)
        return cls(LedgerLoader(conf, topic, index), partitions)

    @property
    def index(self) -> LedgerIndex:
        return self.loader.index

    def load_state(self) -> tuple[int, float]:
        """(ledger partitions being read, seconds since the load last read a record),
        for liveness and readiness (``HealthState.ledger_load``)."""
        progress = self.loader.progress
        return progress.loading, time.monotonic() - progress.last_progress

    def partition(self, source_partition: int) -> int:
        """The ledger partition of a source partition (modulo, should sources grow)."""
        return source_partition % self.ledger_partitions

    def assigned(self, consumer: Consumer, partitions: Iterable[TopicPartition]) -> None:
        """Load the tail each newly assigned partition can re-read (blocks until done)."""
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        if not wanted:
            return
        committed = consumer.committed(wanted, timeout=_TIMEOUT_S)
        requests = [
            TailRequest(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else None)
            for tp in committed
        ]
        highs = self.loader.load_tails(requests, self.ledger_partitions)
        for (topic, partition), high in highs.items():
            if high is None:  # old-format records: bound them by the source's end
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=_TIMEOUT_S
                )
            self.horizons.assigned(topic, partition, high)

    def bounded(self, start: Mapping[SourceKey, int], end: Mapping[SourceKey, int]) -> None:
        """A replay: the keys of ``[start, end)`` of each source partition, no more."""
        requests = [
            TailRequest(topic, partition, first, end=end[(topic, partition)])
            for (topic, partition), first in start.items()
            if first < end[(topic, partition)]
        ]
        self.loader.load_tails(requests, self.ledger_partitions)

    def everything(self, keys: Collection[int] | None = None) -> None:
        """A redrive: dead letters come from any partition and any time; with ``keys``
        (digests), only those keys are held."""
        self.loader.load(range(self.ledger_partitions), keys)

    def revoked(self, partitions: Iterable[SourceKey]) -> None:
        for topic, partition in partitions:
            self.horizons.revoked(topic, partition)

    def value(
        self,
        accepted_ms: int,
        topic: str,
        partition: int,
        offset: int,
        *,
        backfill: bool = False,
    ) -> bytes:
        """The ledger record's value for a signal of ``topic[partition]@offset``."""
        tid = self._topic_ids.get(topic)
        if tid is None:
            tid = self._topic_ids[topic] = topic_id(topic)
        horizon = None if backfill else self.horizons.next(topic, partition, offset)
        return encode(accepted_ms, tid, partition, offset, horizon)


def watch_ledger(registry: CollectorRegistry, progress: LoadProgress, index: LedgerIndex) -> None:
    """The ledger's gauges on the consumer's /metrics page, read when scraped."""

    def gauge(name: str, help_text: str, read: Callable[[], float]) -> None:
        Gauge(f"{PREFIX}_{name}", help_text, registry=registry).set_function(read)

    gauge(
        "ledger_loading_partitions", "Ledger partitions being read now.", lambda: progress.loading
    )
    gauge("ledger_records_read", "Ledger records read since the start.", lambda: progress.records)
    gauge("ledger_loads", "Ledger loads finished since the start.", lambda: progress.loads)
    gauge(
        "ledger_last_load_seconds",
        "How long the last ledger load took.",
        lambda: progress.last_seconds,
    )
    gauge("ledger_keys", "Keys held in the in-memory ledger.", lambda: len(index))
