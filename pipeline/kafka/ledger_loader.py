"""Reads ledger partitions into the index: only the tail that can still be re-read.

A source partition committed at ``C`` can re-read offsets ``>= C`` only, so its reader
needs the ledger records of those offsets only. Ledger records carry their source
offset and a horizon (``ledger_records``): every earlier record of the same source
partition that can matter refers to an offset below it. So the loader reads each
ledger partition *backwards*, in growing chunks from its end, until it has passed,
for every source partition it loads, a record of that partition whose horizon is
``<= C``; what lies before cannot refer to an offset ``>= C``. The cost is the tail
written since the writer read past ``C`` (about one commit interval plus what was
buffered), whatever the retention holds.

Without such a record (nothing committed yet, a ledger written before the upgrade, a
source partition that wrote nothing recent into a shared ledger partition) the read
goes back to the retention cutoff, as it always did.

A replay or redrive gives a range instead (``TailRequest.end``): the read starts the
same way, at ``C`` = the range's first offset, and only records inside the range (and
old-format ones, whose source is unknown) are kept: memory follows the range, not the
ledger.

Ledger partitions are read *uncommitted*, on purpose (see ``pipeline.kafka.ledger``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from confluent_kafka import Consumer

from pipeline.kafka.ledger_index import LedgerIndex, key_digest
from pipeline.kafka.ledger_reads import read_range, reader_config, retention_bounds
from pipeline.kafka.ledger_records import LedgerRecord, decode, topic_id

log = structlog.get_logger("pipeline.kafka.ledger")

#: Give up on a ledger partition that yields nothing for this long (the broker is gone);
#: a long read that makes progress is never cut short.
LOAD_TIMEOUT_S: Final = 300.0
#: Records read per chunk when reading backwards: the first chunk, and the largest.
FIRST_CHUNK: Final = 4_096
MAX_CHUNK: Final = 131_072
_QUERY_TIMEOUT_S: Final = 30.0


class LoadCancelled(Exception):
    """Every partition a load was for was revoked before it ended."""


@dataclass(frozen=True, slots=True)
class TailRequest:
    """One source partition's need: the ledger records of offsets ``>= committed``
    (``< end`` if given: a replay's range). ``committed`` None: everything since the
    retention cutoff (nothing committed, so anything can be re-read)."""

    topic: str
    partition: int
    committed: int | None
    end: int | None = None
    #: the source partition's end offset now: bounds old-format records' offsets
    source_end: int | None = None


@dataclass(slots=True)
class LoadProgress:
    """What a load is doing, for liveness, readiness, metrics and logs (one writer)."""

    loading: int = 0  # ledger partitions being read now
    records: int = 0  # ledger records read since the process started
    keys: int = 0  # of them, added to the index (within the retention window)
    loads: int = 0  # loads finished
    last_seconds: float = 0.0  # how long the last load took
    last_progress: float = field(default_factory=time.monotonic)

    def advanced(self, records: int) -> None:
        self.records += records
        self.last_progress = time.monotonic()


@dataclass(slots=True)
class _Need:
    """A request, resolved to its ledger partition and topic id, while being read."""

    request: TailRequest
    topic: int
    stop: int | None = None  # the ledger offset where its reading may start
    high: int = 0  # one past the highest source offset seen for it


class LedgerLoader:
    """Reads the ledger partitions a consumer needs into its index."""

    def __init__(
        self,
        kafka_conf: dict[str, Any],
        topic: str,
        index: LedgerIndex,
        *,
        progress: LoadProgress | None = None,
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        self._conf = reader_config(kafka_conf, "ledger-loader")
        self.topic = topic
        self.index = index
        self.progress = progress or LoadProgress()
        self._on_progress = on_progress  # e.g. the liveness clock: a load is not a hang
        self._lock = threading.Lock()  # one load at a time per loader
        self._ends: dict[int, tuple[int, int]] = {}  # partition: (window start, end)
        self._cancelled: Callable[[], bool] = _never  # the load under way's

    # --- public -------------------------------------------------------------------------

    def load_tails(
        self,
        requests: Iterable[TailRequest],
        ledger_partitions: int,
        *,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> dict[tuple[str, int], int | None]:
        """Read what each request needs; returns, per source partition, one past the
        highest source offset read for it (the writer's starting horizon: see
        ``Horizons``), or None when the tail held old-format records and the source
        end is unknown (the writer then writes no horizon).

        ``cancelled()`` is asked between fetches: True stops the load with
        ``LoadCancelled`` (what it read stays in the index: true facts all the same)."""
        by_partition: dict[int, list[_Need]] = {}
        for request in requests:
            need = _Need(request, topic_id(request.topic))
            by_partition.setdefault(request.partition % ledger_partitions, []).append(need)
        highs: dict[tuple[str, int], int | None] = {}
        if not by_partition:
            return highs
        with self._lock:
            consumer = Consumer(self._conf)
            self.progress.advanced(0)  # a load starting is progress (liveness)
            self.progress.loading += len(by_partition)
            self._cancelled = cancelled
            try:
                for partition, needs in sorted(by_partition.items()):
                    old_format = self._load_partition(consumer, partition, needs)
                    self.progress.loading -= 1
                    for need in needs:
                        key = (need.request.topic, need.request.partition)
                        if not old_format:
                            highs[key] = need.high
                        elif need.request.source_end is not None:
                            highs[key] = max(need.high, need.request.source_end)
                        else:
                            highs[key] = None
            finally:
                self._cancelled = _never
                self.progress.loading = 0
                consumer.close()
        return highs

    def load(self, partitions: Iterable[int], keys: Collection[int] | None = None) -> int:
        """Everything since the retention cutoff; with ``keys`` (digests, ``key_digest``),
        only the records of those keys: a redrive, whose dead letters may come from any
        partition and any time, holds the keys it will look up, not the ledger."""
        if keys is not None:
            wanted_keys = keys

            def keep(_: int, key: bytes, record: LedgerRecord) -> None:
                items = [(o, k) for o, k in record.keyed(key) if key_digest(k) in wanted_keys]
                self._add(items, record.accepted_ms)
        else:

            def keep(_: int, key: bytes, record: LedgerRecord) -> None:
                self._add(record.keyed(key), record.accepted_ms)

        read = 0
        wanted = sorted(set(partitions))
        started = time.monotonic()
        with self._lock:
            consumer = Consumer(self._conf)
            self.progress.advanced(0)
            self.progress.loading += len(wanted)
            try:
                for partition in wanted:
                    low, _ = self._bounds(consumer, partition)
                    read += self._read_forward(consumer, partition, low, None, keep)
                    self.progress.loading -= 1
            finally:
                self.progress.loading = 0
                consumer.close()
        self.progress.loads += 1
        self.progress.last_seconds = time.monotonic() - started
        log.info(
            "ledger loaded",
            topic=self.topic,
            partitions=wanted,
            read=read,
            whole_retention=True,
            only_keys=None if keys is None else len(keys),
            keys=len(self.index),
            seconds=round(self.progress.last_seconds, 3),
        )
        return read

    # --- reading ---------------------------------------------------------------------------

    def _load_partition(self, consumer: Consumer, partition: int, needs: list[_Need]) -> bool:
        """Read one ledger partition back from its end until every need has its stop;
        returns whether old-format records were among those kept."""
        started = time.monotonic()
        low, end = self._bounds(consumer, partition)
        if all(not n.request.committed for n in needs):
            # nothing can stop a read back (nothing committed, or a range from offset 0):
            # one pass forward from the retention cutoff, nothing buffered
            begin = low
            read, kept, old_format = self._read_kept(consumer, partition, needs, low)
        else:
            begin, read, kept, old_format = self._read_back(consumer, partition, needs, low, end)
        seconds = time.monotonic() - started
        self.progress.loads += 1
        self.progress.last_seconds = seconds
        log.info(
            "ledger loaded",
            topic=self.topic,
            partition=partition,
            read=read,
            kept=kept,
            from_offset=begin,
            whole_retention=begin <= low,
            keys=len(self.index),
            seconds=round(seconds, 3),
        )
        return old_format

    def _read_kept(
        self, consumer: Consumer, partition: int, needs: list[_Need], start: int
    ) -> tuple[int, int, bool]:
        """From ``start`` to the end: (records read, kept, old-format among them)."""
        kept = [0, 0]  # kept, old-format kept

        def sink(_: int, key: bytes, record: LedgerRecord) -> None:
            items = self._kept(needs, key, record)
            if items:
                kept[0] += self._add(items, record.accepted_ms)
                kept[1] += record.topic is None
                self._note_high(needs, record)

        read = self._read_forward(consumer, partition, start, None, sink)
        return read, kept[0], kept[1] > 0

    def _read_back(
        self, consumer: Consumer, partition: int, needs: list[_Need], low: int, end: int
    ) -> tuple[int, int, int, bool]:
        """Chunks back from the end to the stops: (first offset kept, read, kept, old)."""
        size = FIRST_CHUNK
        upper: int | None = None  # the first chunk reads to the partition's end (EOF)
        start = max(low, end - size)
        kept = read = 0
        old_format = False
        while True:
            chunk = self._read_chunk(consumer, partition, start, upper)
            read += len(chunk)
            open_needs = [n for n in needs if n.stop is None]
            for offset, _, record in chunk:  # in offset order: the latest stop wins
                for need in open_needs:
                    committed = need.request.committed
                    if committed is not None and record.stops(
                        need.topic, need.request.partition, committed
                    ):
                        need.stop = offset
            done = all(n.stop is not None for n in needs) or start <= low
            begin = start
            if done and open_needs:  # from the earliest stop found in this chunk
                begin = min(start if n.stop is None else n.stop for n in open_needs)
            for offset, key, record in chunk:
                if offset < begin:
                    continue
                items = self._kept(needs, key, record)
                if items:
                    kept += self._add(items, record.accepted_ms)
                    old_format = old_format or record.topic is None
                    self._note_high(needs, record)
            if done:
                return begin, read, kept, old_format
            upper, size = start, min(size * 2, MAX_CHUNK)
            start = max(low, start - size)

    @staticmethod
    def _kept(needs: list[_Need], key: bytes, record: LedgerRecord) -> Sequence[tuple[int, str]]:
        """The (source offset, key) items of a record to keep: a live tail keeps every
        one; a range keeps its own (and old-format ones, whose source is unknown)."""
        items = record.keyed(key)
        if record.topic is None:
            return items
        ranges = []
        for need in needs:
            request = need.request
            if request.end is None:
                return items
            if record.topic == need.topic and record.partition == request.partition:
                ranges.append((request.committed or 0, request.end))
        return [item for item in items if any(low <= item[0] < end for low, end in ranges)]

    @staticmethod
    def _note_high(needs: list[_Need], record: LedgerRecord) -> None:
        for need in needs:
            if record.topic == need.topic and record.partition == need.request.partition:
                need.high = max(need.high, record.offset + 1)

    def _add(self, items: Sequence[tuple[int, str]], accepted_ms: int) -> int:
        """Keys into the index (one lock for a format-3 record's); how many were added."""
        if len(items) == 1:
            added = int(self.index.add(items[0][1], accepted_ms))
        elif items and self.index.add_many([key for _, key in items], accepted_ms):
            added = len(items)
        else:
            added = 0
        self.progress.keys += added
        return added

    def _bounds(self, consumer: Consumer, partition: int) -> tuple[int, int]:
        """Where the retention window starts (skipped without reading) and the end."""
        low, high = retention_bounds(
            consumer, self.topic, partition, self.index.cutoff_ms(), _QUERY_TIMEOUT_S
        )
        self._ends[partition] = (low, high)
        return low, high

    def _read_chunk(
        self, consumer: Consumer, partition: int, start: int, upper: int | None
    ) -> list[tuple[int, bytes, LedgerRecord]]:
        chunk: list[tuple[int, bytes, LedgerRecord]] = []
        self._read_forward(consumer, partition, start, upper, lambda *item: chunk.append(item))
        return chunk

    def _read_forward(
        self,
        consumer: Consumer,
        partition: int,
        start: int,
        upper: int | None,
        sink: Callable[[int, bytes, LedgerRecord], object],
    ) -> int:
        """Hand ledger records from ``start`` to ``upper`` (exclusive; None: the end) to
        ``sink``; returns how many records were read."""
        if upper is not None and start >= upper:
            return 0
        low, end = self._ends.get(partition, (0, 0))
        if upper is None and start >= end and end <= low:
            return 0  # an empty window: nothing to fetch (the end is what EOF reports)

        def check() -> None:
            if self._cancelled():
                raise LoadCancelled(f"ledger {self.topic}[{partition}]: load cancelled")

        read = 0
        batches = read_range(
            consumer, self.topic, partition, start, upper, timeout_s=LOAD_TIMEOUT_S, check=check
        )
        for batch in batches:
            self._on_progress()
            for message in batch:
                key = message.key()
                record = decode(message.value())
                if key is not None and record is not None:
                    sink(message.offset() or 0, key, record)
            read += len(batch)
            self.progress.advanced(len(batch))
        return read


def _never() -> bool:
    return False
