"""A replay's ledger, read alongside it: a streaming join in bounded memory.

A replay of source partition ``p`` over ``[a, b)`` must skip every record whose key
the ledger holds. The ledger is written in *acceptance* order, not source order
(retries, several writers, earlier replays' and redrives' records, which carry no
horizon), so no forward read can declare an offset "not accepted" before it has seen
every record that could name it: the whole stretch that can hold offsets ``>= a``.
Holding that stretch's keys makes memory follow the range (a replay from offset 0:
the retention). The join reads it twice instead, holding little each time:

1. **Plan** (``plan``): each ledger partition is read *backwards* from its end (chunks
   of 4,096 records doubling to 131,072), as a live start reads its tail, until it has
   passed, for every replayed source partition it holds, a live record whose horizon is
   ``<= a``: nothing before it can name an offset ``>= a`` (``ledger_records``). The
   plan keeps no key, only a map: per block of ``BLOCK`` ledger records, the lowest and
   highest source offset it names inside the range, per source partition. It ends at
   the ledger's end as it starts: a replay's range stops at the live group's committed
   offset, so no later live record names it. Format-1
   records (before the upgrade: no source) can name any offset: their keys are kept,
   for the whole replay, and counted (``JoinStats.format1``); they age out of the
   ledger one retention after the upgrade.
2. **Windows** (``load``): the replay runs window by window of ``window`` source
   offsets per partition; before each, the join reads only the blocks whose map
   intersects the window and holds the keys that name an offset in it. A ledger in
   source order (one live writer) has each block read about once more; records out of
   order (a backfill's, two writers after a rebalance) make their blocks read again
   for each window they touch: slower, never wrong.

Memory: the map (a few ints per block: 16 B a source partition per 16,384 ledger
records) plus the keys of at most two windows (the one being replayed and the next,
read ahead) plus the format-1 keys; never the range's. ``JoinStats`` counts it.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from confluent_kafka import Consumer

from pipeline.kafka.ledger_reads import read_range, reader_config, retention_bounds
from pipeline.kafka.ledger_records import LedgerEntry, entries, topic_id

log = structlog.get_logger("pipeline.kafka.ledger_join")

SourceKey = tuple[str, int]
#: Ledger records summarised together in the plan (a window reads whole blocks).
BLOCK: Final = 16_384
FIRST_CHUNK: Final = 4_096
MAX_CHUNK: Final = 131_072
#: Give up on a ledger partition that yields nothing for this long (the broker is gone).
READ_TIMEOUT_S: Final = 300.0
_QUERY_TIMEOUT_S: Final = 30.0


@dataclass(slots=True)
class JoinStats:
    """What the join read and held (the report, the tests, the benchmark)."""

    window: int = 0  # source offsets per window
    planned: int = 0  # ledger records read by the plan
    reread: int = 0  # ledger records read by the windows
    windows: int = 0  # windows loaded
    format1: int = 0  # format-1 keys held for the whole replay
    held: int = 0  # keys held now (windows alive + format 1)
    peak_held: int = 0  # the most held at once
    blocks: int = 0  # blocks in the plan's map

    def hold(self, count: int) -> None:
        self.held += count
        self.peak_held = max(self.peak_held, self.held)


@dataclass(frozen=True, slots=True)
class Window:
    """One window: per source partition ``[start, end)``, and the keys that name it."""

    start: dict[SourceKey, int]
    end: dict[SourceKey, int]
    digests: array[int] = field(default_factory=lambda: array("Q"))


class LedgerJoin:
    """Plans the ledger read for a replay's ranges, then loads it window by window.

    One thread at a time (the replay's read-ahead thread, or the caller).
    """

    def __init__(
        self,
        kafka_conf: dict[str, Any],
        topic: str,
        ledger_partitions: int,
        ranges: Mapping[SourceKey, tuple[int, int]],
        *,
        window: int,
        cutoff_ms: Callable[[], int],
    ) -> None:
        self.topic = topic
        self._ranges = {k: r for k, r in ranges.items() if r[0] < r[1]}
        self._window = max(1, window)
        self._cutoff_ms = cutoff_ms
        self.stats = JoinStats(window=self._window)
        self._ledger_of = {k: k[1] % ledger_partitions for k in self._ranges}
        self._ids = {(topic_id(t), p): (t, p) for t, p in self._ranges}
        # ledger partition: block number: source key: [lowest, highest] offset named
        self._map: dict[int, dict[int, dict[SourceKey, list[int]]]] = {}
        self._ends: dict[int, tuple[int, int]] = {}  # ledger partition: (low, end)
        self.format1 = array("Q")  # format-1 digests: no source, held throughout
        self._last_read = -1  # the highest ledger offset the last read handed on
        self._reader: Consumer | None = None  # made on the first read
        self._conf = reader_config(kafka_conf, "ledger-join")

    @property
    def _consumer(self) -> Consumer:
        if self._reader is None:
            self._reader = Consumer(self._conf)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # --- the plan ----------------------------------------------------------------------

    def plan(self) -> None:
        """Read each ledger partition back to its stops; keep the map, not the keys."""
        started = time.monotonic()
        by_ledger: dict[int, list[SourceKey]] = {}
        for key, ledger in self._ledger_of.items():
            by_ledger.setdefault(ledger, []).append(key)
        for ledger, keys in sorted(by_ledger.items()):
            self._plan_partition(ledger, keys)
        self.stats.blocks = sum(len(blocks) for blocks in self._map.values())
        self.stats.format1 = len(self.format1)
        self.stats.hold(len(self.format1))
        if self.format1:
            log.warning(
                "format-1 ledger records (before the upgrade) in the replay's reach: "
                "their keys are held for the whole replay",
                keys=len(self.format1),
            )
        log.info(
            "ledger join planned",
            topic=self.topic,
            read=self.stats.planned,
            blocks=self.stats.blocks,
            format1=len(self.format1),
            seconds=round(time.monotonic() - started, 3),
        )

    def _plan_partition(self, ledger: int, keys: list[SourceKey]) -> None:
        low, end = self._bounds(ledger)
        # a live record of the source partition whose horizon is <= the range's first
        # offset ends the read back; a range from offset 0 has none: to the cutoff
        open_keys = {(topic_id(t), p): self._ranges[(t, p)][0] for t, p in keys}
        to_cutoff = any(first == 0 for first in open_keys.values())
        blocks = self._map.setdefault(ledger, {})
        note = self._planner(blocks, open_keys, self._cutoff_ms())
        size = FIRST_CHUNK
        upper: int | None = None  # the first chunk reads to the end (EOF: the exact end)
        start = max(low, end - size)
        while True:
            self._last_read = start - 1
            self.stats.planned += self._read(ledger, start, upper, note)
            if upper is None:  # a broker's end offset may undercount: what was read counts
                self._ends[ledger] = (low, max(end, self._last_read + 1))
            if (not open_keys and not to_cutoff) or start <= low:
                return
            upper, size = start, min(size * 2, MAX_CHUNK)
            start = max(low, start - size)

    def _planner(
        self,
        blocks: dict[int, dict[SourceKey, list[int]]],
        open_keys: dict[tuple[int, int], int],
        cutoff: int,
    ) -> Callable[[int, list[LedgerEntry]], None]:
        ids, ranges, format1 = self._ids, self._ranges, self.format1

        def note(offset: int, found: list[LedgerEntry]) -> None:
            for entry in found:
                if entry.topic is None:
                    if entry.accepted_ms >= cutoff:
                        format1.append(entry.digest)
                    continue
                source = (entry.topic, entry.partition)
                key = ids.get(source)
                if key is None:
                    continue
                first, last = ranges[key]
                if first <= entry.offset < last:
                    stats = blocks.setdefault(offset // BLOCK, {}).get(key)
                    if stats is None:
                        blocks[offset // BLOCK][key] = [entry.offset, entry.offset]
                    elif entry.offset < stats[0]:
                        stats[0] = entry.offset
                    elif entry.offset > stats[1]:
                        stats[1] = entry.offset
                stop = open_keys.get(source)
                if stop and entry.horizon is not None and entry.horizon <= stop:
                    del open_keys[source]  # what lies before names offsets below the range

        return note

    # --- windows -----------------------------------------------------------------------

    def windows(self) -> Iterator[Window]:
        """The windows to replay, in order (their keys not loaded yet)."""
        step = 0
        while True:
            start: dict[SourceKey, int] = {}
            end: dict[SourceKey, int] = {}
            for key, (first, last) in self._ranges.items():
                low = first + step * self._window
                if low < last:
                    start[key], end[key] = low, min(last, low + self._window)
            if not start:
                return
            yield Window(start, end)
            step += 1

    def load(self, window: Window, only: Collection[int] | None = None) -> Window:
        """The window with the keys that name an offset in it (held until ``release``);
        with ``only`` (a redrive's digests), those keys alone."""
        found = array("Q")
        cutoff = self._cutoff_ms()
        wanted = {
            (topic_id(t), p): (window.start[(t, p)], window.end[(t, p)]) for t, p in window.start
        }
        for ledger, runs in self._runs(window).items():
            for first, upper in runs:

                def keep(_: int, found_here: list[LedgerEntry]) -> None:
                    for entry in found_here:
                        if entry.topic is None:
                            continue  # format 1: held for the whole replay
                        bounds = wanted.get((entry.topic, entry.partition))
                        if (
                            bounds is not None
                            and bounds[0] <= entry.offset < bounds[1]
                            and entry.accepted_ms >= cutoff
                            and (only is None or entry.digest in only)
                        ):
                            found.append(entry.digest)

                self.stats.reread += self._read(ledger, first, upper, keep)
        # a key named twice (two writers, a record written again after an abort) once
        loaded = Window(window.start, window.end, array("Q", sorted(set(found))))
        self.stats.windows += 1
        self.stats.hold(len(loaded.digests))
        return loaded

    def everything(self, only: Collection[int]) -> array[int]:
        """A redrive: which of ``only`` (its dead letters' digests) the ledger names
        anywhere in the ranges, format 1 included; memory follows ``only``."""
        whole = Window(
            {key: first for key, (first, _) in self._ranges.items()},
            {key: last for key, (_, last) in self._ranges.items()},
        )
        loaded = self.load(whole, only).digests
        loaded.extend(digest for digest in self.format1 if digest in only)
        return loaded

    def release(self, window: Window) -> None:
        self.stats.held -= len(window.digests)

    def _runs(self, window: Window) -> dict[int, list[tuple[int, int]]]:
        """Per ledger partition, the stretches of blocks that name the window."""
        runs: dict[int, list[tuple[int, int]]] = {}
        for ledger, blocks in self._map.items():
            low, end = self._ends[ledger]
            chosen = sorted(
                number
                for number, named in blocks.items()
                if any(
                    key in window.start and lo < window.end[key] and hi >= window.start[key]
                    for key, (lo, hi) in named.items()
                )
            )
            stretches: list[tuple[int, int]] = []
            for number in chosen:
                first, upper = max(low, number * BLOCK), min(end, (number + 1) * BLOCK)
                if stretches and stretches[-1][1] >= first:
                    stretches[-1] = (stretches[-1][0], upper)
                else:
                    stretches.append((first, upper))
            if stretches:
                runs[ledger] = stretches
        return runs

    # --- reading -----------------------------------------------------------------------

    def _bounds(self, ledger: int) -> tuple[int, int]:
        """Where the retention window starts (skipped without reading) and the end."""
        low, high = retention_bounds(
            self._consumer, self.topic, ledger, self._cutoff_ms(), _QUERY_TIMEOUT_S
        )
        self._ends[ledger] = (low, high)
        return low, high

    def _read(
        self,
        ledger: int,
        start: int,
        upper: int | None,
        sink: Callable[[int, list[LedgerEntry]], None],
    ) -> int:
        """Hand the entries of ledger records ``[start, upper)`` (None: to the end) to
        ``sink``; returns how many records were read."""
        if upper is not None and start >= upper:
            return 0
        low, end = self._ends[ledger]
        if upper is None and end <= low:
            return 0  # an empty window: nothing to fetch
        read = 0
        for batch in read_range(
            self._consumer, self.topic, ledger, start, upper, timeout_s=READ_TIMEOUT_S
        ):
            for message in batch:
                offset = message.offset() or 0
                self._last_read = max(self._last_read, offset)
                sink(offset, entries(message.key(), message.value()))
            read += len(batch)
        return read
