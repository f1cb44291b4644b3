"""The consumer's side of the ledger: what it loads on assignment, what it writes.

The interface the consumer core calls (and nothing else of the ledger's reading):

- ``start_loading(consumer, partitions)``: from the assign callback. Reads each
  partition's committed offset and queues the load of the ledger tail that offset can
  re-read (``LedgerLoader.load_tails``) on a worker thread with its own consumer; the
  callback returns at once and the poll loop keeps turning (heartbeats, the other
  partitions' records, revocations) while it runs.
- ``loaded()``: on the loop thread, each turn: the partitions whose load ended, with
  the offset their reading starts from; sets the horizons their next ledger records
  carry. Until then the consumer holds their records (the duplicate guarantee: no
  record is handled before its partition's ledger tail is in the index).
- ``cancel(partitions)``: revoked or lost: a load for them no longer counts (it stops
  at its next fetch if nothing else needs it); a newer assignment's load replaces it.
- ``bounded(start, end)``: a replay or redrive, before its partitions are assigned:
  loads the keys of those source ranges only (on the caller's thread).
- ``batch_value(...)``, ``value(...)`` and ``partition(...)``: a ledger record for a
  delivered batch's signals of one source partition (format 3) or for one signal
  (format 2), and the ledger partition it goes to.

A live consumer's records carry a horizon; a replay's or redrive's (``backfill``)
carry none, as they are written out of source order.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client import CollectorRegistry, Gauge

from pipeline.config import Settings
from pipeline.kafka.ledger import ensure_ledger_topic, source_partition_count
from pipeline.kafka.ledger_index import LedgerIndex
from pipeline.kafka.ledger_loader import LedgerLoader, LoadCancelled, LoadProgress, TailRequest
from pipeline.kafka.ledger_records import Horizons, encode, encode_batch, topic_id
from pipeline.ops.metrics import PREFIX

log = structlog.get_logger("pipeline.kafka.ledger")

_TIMEOUT_S: Final = 30.0
SourceKey = tuple[str, int]
_LATEST: Final = frozenset({"latest", "largest", "end"})


@dataclass(slots=True)
class _Load:
    """One assignment's load: its partitions, where their reading starts, the result."""

    number: int
    requests: list[TailRequest]
    starts: dict[SourceKey, int]  # a committed offset, or where a reset would start
    highs: dict[SourceKey, int | None] | None = None
    error: Exception | None = None


class LedgerTail:
    """Loads what a consumer's partitions can re-read; encodes what it writes."""

    def __init__(
        self, loader: LedgerLoader, ledger_partitions: int, *, offset_reset: str = "earliest"
    ) -> None:
        self.loader = loader
        self.ledger_partitions = ledger_partitions
        self.horizons = Horizons()
        self._topic_ids: dict[str, int] = {}
        self._reset_latest = offset_reset in _LATEST
        # partition: the number of the load it waits for (written by the loop thread
        # only; the worker reads it to know whether a load still counts)
        self._waiting: dict[SourceKey, int] = {}
        self._numbers = itertools.count(1)
        self._queue: queue.SimpleQueue[_Load | None] = queue.SimpleQueue()
        self._ended: deque[_Load] = deque()
        self._worker: threading.Thread | None = None

    @classmethod
    def prepare(
        cls, settings: Settings, index: LedgerIndex, *, offset_reset: str = "earliest"
    ) -> LedgerTail:
        """At start: the ledger topic (created when absent) and its reader."""
        conf = settings.kafka_common()
        topic = settings.ledger_topic_name
        sources = source_partition_count(conf, settings)
        partitions = ensure_ledger_topic(conf, topic, sources, index.retention_ms)
        return cls(LedgerLoader(conf, topic, index), partitions, offset_reset=offset_reset)

    @property
    def index(self) -> LedgerIndex:
        return self.loader.index

    def load_state(self) -> tuple[int, float]:
        """(source partitions waiting for their load, seconds since the load last read a
        record), for liveness and readiness (``HealthState.ledger_load``)."""
        progress = self.loader.progress
        waiting = len(self._waiting)
        return waiting, time.monotonic() - progress.last_progress if waiting else 0.0

    def partition(self, source_partition: int) -> int:
        """The ledger partition of a source partition (modulo, should sources grow)."""
        return source_partition % self.ledger_partitions

    # --- a group member's loads, beside its poll loop ------------------------------------

    @property
    def waiting(self) -> int:
        """Partitions assigned whose load has not ended (their records are held)."""
        return len(self._waiting)

    def waits(self, key: SourceKey) -> bool:
        """This partition's load has not ended."""
        return key in self._waiting

    @property
    def ended(self) -> bool:
        """A load ended since ``loaded`` last looked (cheap: asked each loop turn)."""
        return bool(self._ended)

    def start_loading(
        self, consumer: Consumer, partitions: Iterable[TopicPartition]
    ) -> list[SourceKey]:
        """From the assign callback: queue the load of what these partitions can re-read
        (their committed offsets are read here); returns their keys at once."""
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        if not wanted:
            return []
        committed = consumer.committed(wanted, timeout=_TIMEOUT_S)
        requests, starts = [], {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            known = tp.offset >= 0
            requests.append(TailRequest(tp.topic, tp.partition, tp.offset if known else None))
            starts[key] = tp.offset if known else self._reset_offset(consumer, tp)
        load = _Load(next(self._numbers), requests, starts)
        for key in starts:
            self._waiting[key] = load.number  # a newer load of a partition replaces an older
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="ledger-load", daemon=True)
            self._worker.start()
        self._queue.put(load)
        return list(starts)

    def loaded(self, consumer: Consumer) -> list[tuple[SourceKey, int]]:
        """On the loop thread: the partitions whose load ended, each with the offset its
        reading starts from; their horizons are set. A failed load raises its error
        (the consumer stops uncommitted, as a failed load always did)."""
        ready: list[tuple[SourceKey, int]] = []
        while self._ended:
            load = self._ended.popleft()
            keys = [k for k in load.starts if self._waiting.get(k) == load.number]
            if load.error is not None:
                if keys:
                    raise load.error
                continue  # revoked meanwhile: nobody waits for it
            assert load.highs is not None
            for key in keys:
                del self._waiting[key]
                high = load.highs.get(key)
                if high is None:  # old-format records: bound them by the source's end
                    _, high = consumer.get_watermark_offsets(
                        TopicPartition(*key), timeout=_TIMEOUT_S
                    )
                self.horizons.assigned(key[0], key[1], high)
                ready.append((key, load.starts[key]))
        return ready

    def cancel(self, partitions: Iterable[SourceKey]) -> None:
        """Revoked or lost: their loads no longer count; their horizons are forgotten."""
        for key in partitions:
            self._waiting.pop(key, None)
            self.horizons.revoked(*key)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker: loads under way stop at their next fetch."""
        self._waiting.clear()
        worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout_s)

    def _counts(self, load: _Load) -> bool:
        waiting = self._waiting
        return any(waiting.get(key) == load.number for key in load.starts)

    def _work(self) -> None:
        while (load := self._queue.get()) is not None:
            if not self._counts(load):
                continue  # all revoked before it started
            try:
                load.highs = self.loader.load_tails(
                    load.requests, self.ledger_partitions, cancelled=lambda: not self._counts(load)
                )
            except LoadCancelled:
                log.info("ledger load cancelled: its partitions were revoked", load=load.number)
                continue
            except Exception as error:  # handed to the loop thread, which stops on it
                load.error = error
            self._ended.append(load)

    def _reset_offset(self, consumer: Consumer, tp: TopicPartition) -> int:
        """Where a partition with no committed offset starts (``auto.offset.reset``)."""
        if not self._reset_latest:
            return OFFSET_BEGINNING
        _, high = consumer.get_watermark_offsets(tp, timeout=_TIMEOUT_S)
        return int(high)

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

    def batch_value(
        self,
        accepted_ms: int,
        topic: str,
        partition: int,
        items: Sequence[tuple[int, str]],
        *,
        backfill: bool = False,
    ) -> bytes | None:
        """A format-3 value for ``items`` (source offset, key) of ``topic[partition]``;
        None when the format cannot hold them (``encode_batch``)."""
        tid = self._topic_ids.get(topic)
        if tid is None:
            tid = self._topic_ids[topic] = topic_id(topic)
        horizon = None
        if not backfill:
            horizon = self.horizons.next(topic, partition, max(offset for offset, _ in items))
        return encode_batch(accepted_ms, tid, partition, items, horizon)


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
