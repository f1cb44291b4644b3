"""``connect-pipeline replay``: re-read a range of the source topics, for backfills.

A replay reads explicit partitions from given offsets (or timestamps) up to the end
offsets captured when it starts, in its own consumer group (the live group's offsets
never move), through the same path as the live consumer: the ledger skips what
Connect already accepted, so only what is missing is sent.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any

import structlog
from confluent_kafka import Consumer, TopicPartition

from pipeline.config import DeriveAbandonment, Settings
from pipeline.kafka.consumer import Bounds, RecordOrigin, RunSummary, SignalConsumer
from pipeline.kafka.ledger import ensure_ledger_topic, source_partition_count
from pipeline.kafka.ledger_join import JoinStats, LedgerJoin
from pipeline.signals.processor import EventProcessor

TIMEOUT_S = 30.0
log = structlog.get_logger("pipeline.kafka.replay")


@dataclass(frozen=True, slots=True)
class Range:
    """Where to start and stop: an offset or a timestamp (ms) to start, a stop time."""

    from_offset: int | None = None
    from_ms: int | None = None
    to_ms: int | None = None


def _metadata_consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **settings.kafka_common(),
            "group.id": settings.group_id,  # queried, never joined nor committed
            "enable.auto.commit": False,
        }
    )


def _by_time(consumer: Consumer, keys: Sequence[tuple[str, int]], ms: int) -> dict[Any, int]:
    """The first offset at or after ``ms`` per partition (-1: none)."""
    query = [TopicPartition(t, p, ms) for t, p in keys]
    found = consumer.offsets_for_times(query, timeout=TIMEOUT_S)
    return {(tp.topic, tp.partition): tp.offset for tp in found}


class UnknownRange(ValueError):
    """A topic or partition to replay that the broker does not have."""


def resolve_bounds(
    settings: Settings,
    topics: Sequence[str],
    partitions: Sequence[int],
    where: Range,
    *,
    whole_ledger: bool = False,
    live_group: str | None = None,
) -> Bounds:
    """Start and end offsets per partition, captured now (the end never moves).

    With ``live_group``, the end is also capped at that group's committed offsets:
    what the live consumer has not committed yet is its to deliver, and a replay
    reading it at the same time could send it alongside (each only knows the ledger
    as loaded when it started).
    """
    consumer = _metadata_consumer(settings)
    try:
        metadata = consumer.list_topics(timeout=TIMEOUT_S).topics
        keys: list[tuple[str, int]] = []
        for topic in topics:
            if topic not in metadata:
                raise UnknownRange(f"topic {topic!r} does not exist")
            known = sorted(metadata[topic].partitions)
            chosen = [p for p in known if not partitions or p in partitions]
            missing = set(partitions) - set(known)
            if missing:
                raise UnknownRange(f"{topic} has no partition {sorted(missing)}")
            keys.extend((topic, p) for p in chosen)
        watermarks = {
            key: consumer.get_watermark_offsets(TopicPartition(*key), timeout=TIMEOUT_S)
            for key in keys
        }
        end = {key: high for key, (_, high) in watermarks.items()}
        if where.to_ms is not None:
            for key, offset in _by_time(consumer, keys, where.to_ms).items():
                if offset >= 0:
                    end[key] = min(end[key], offset)
        if live_group is not None:
            _cap_at_live_offsets(settings, live_group, end)
        start: dict[tuple[str, int], int] = {}
        if where.from_ms is not None:
            for key, offset in _by_time(consumer, keys, where.from_ms).items():
                start[key] = offset if offset >= 0 else end[key]
        else:
            first = where.from_offset or 0
            start = {key: max(first, watermarks[key][0]) for key in keys}
    finally:
        consumer.close()
    return Bounds(start, end, whole_ledger)


def _cap_at_live_offsets(settings: Settings, group: str, end: dict[Any, int]) -> None:
    live = _metadata_consumer(settings.model_copy(update={"group_id": group}))
    try:
        committed = live.committed([TopicPartition(*key) for key in end], timeout=TIMEOUT_S)
    finally:
        live.close()
    for tp in committed:
        key = (tp.topic, tp.partition)
        if tp.offset < 0:
            log.warning(
                "the live group has no committed offset here: the replay may overlap it",
                partition=f"{tp.topic}[{tp.partition}]",
                live_group=group,
            )
        elif tp.offset < end[key]:
            log.info(
                "replay stops at the live group's committed offset",
                partition=f"{tp.topic}[{tp.partition}]",
                end=tp.offset,
                high_watermark=end[key],
            )
            end[key] = tp.offset


def bounded_settings(settings: Settings, group: str, topics: Sequence[str] = ()) -> Settings:
    """The live settings for a one-off run in its own group, on the live ledger.

    The transactional id follows the new group (and the host), so the run never
    fences a live replica.
    """
    update: dict[str, Any] = {
        "group_id": group,
        "group_instance_id": None,
        "transactional_id": None,
        "ledger_topic": settings.ledger_topic_name,
    }
    if topics:
        update.update(topics=list(topics), topic_pattern=None)
    return settings.model_copy(update=update)


def run_bounded(
    settings: Settings,
    bounds: Bounds,
    *,
    origin: RecordOrigin | None = None,
    progress: bool = False,
    description: str = "replay",
    window: int | None = None,
    preloaded: Iterable[int] = (),
) -> RunSummary:
    """Read the bounded range through the pipeline; returns what it did.

    A replay (ranges of source partitions, the ledger on) joins the ledger window by
    window (``pipeline.kafka.ledger_join``): ``window`` source offsets per partition at
    a time (default ``PIPELINE_LEDGER_MAX_KEYS / 4``), so that what it holds follows
    the window, not the range. A redrive (``whole_ledger``) runs in one go, its index
    holding ``preloaded`` (digests) when its bounds say ``ledger_preloaded``.
    """
    from pipeline.kafka.runner import build_processor

    processor = build_processor(settings)
    total = sum(max(0, bounds.end[k] - s) for k, s in bounds.start.items())
    with _Progress(total, description, enabled=progress) as bar:
        if not settings.ledger_enabled or bounds.whole_ledger:
            consumer = SignalConsumer(settings, processor, bounds=bounds, origin=origin)
            consumer.ledger.add_digests(preloaded, int(time.time() * 1000))
            return _run_once(consumer, bar)
        size = window if window is not None else window_size(settings, total)
        return run_joined(settings, bounds, processor, size, origin=origin, bar=bar).summary


def window_size(settings: Settings, total: int) -> int:
    """Source offsets a replay window spans: a quarter of the ledger bound, or the whole
    range when sessions are derived (sessions cross window ends: one window, so that a
    replay derives what the live run derived; its keys then follow the range)."""
    if settings.derive_abandonment is not DeriveAbandonment.OFF:
        return max(1, total)
    return max(1, settings.ledger_max_keys // 4)


@dataclass(slots=True)
class JoinedRun:
    """A replay joined with the ledger: what it did, and what the join read and held."""

    summary: RunSummary
    join: JoinStats
    finished: bool  # every window replayed (False: stopped by a signal)


def run_joined(
    settings: Settings,
    bounds: Bounds,
    processor: EventProcessor,
    window: int,
    *,
    origin: RecordOrigin | None = None,
    bar: _Progress | None = None,
) -> JoinedRun:
    """The replay, window by window: the join reads the next window's ledger keys while
    the current window is replayed by a bounded consumer whose index holds them."""
    ranges = {k: (s, bounds.end[k]) for k, s in bounds.start.items()}
    join = ledger_join(settings, ranges, window)
    summary = RunSummary()
    stopping = threading.Event()
    current: list[SignalConsumer] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        for consumer in current:
            consumer.stop()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        join.plan()
        with ThreadPoolExecutor(1, thread_name_prefix="ledger-join") as ahead:
            windows = iter(join.windows())
            following = next(windows, None)
            loading = ahead.submit(join.load, following) if following is not None else None
            while loading is not None and not stopping.is_set():
                loaded = loading.result()
                following = next(windows, None)  # read ahead while this one is replayed
                loading = ahead.submit(join.load, following) if following is not None else None
                consumer = SignalConsumer(
                    settings,
                    processor,
                    bounds=Bounds(loaded.start, loaded.end, ledger_preloaded=True),
                    origin=origin,
                )
                now_ms = int(time.time() * 1000)
                consumer.ledger.add_digests(loaded.digests, now_ms)
                consumer.ledger.add_digests(join.format1, now_ms)
                current[:] = [consumer]
                if stopping.is_set():  # a signal while it was being built
                    consumer.stop()
                done_before = summary.consumed
                _add(summary, consumer.run() if bar is None else bar.follow(consumer, done_before))
                join.release(loaded)
    finally:
        join.close()
        for signum, handler in previous.items():
            if handler is not None:  # None: not set from Python, nothing to put back
                signal.signal(signum, handler)
    log.info(
        "replay joined with the ledger",
        windows=join.stats.windows,
        window=window,
        ledger_planned=join.stats.planned,
        ledger_reread=join.stats.reread,
        peak_keys_held=join.stats.peak_held,
        format1_keys=join.stats.format1,
        stopped=stopping.is_set(),
    )
    return JoinedRun(summary, join.stats, not stopping.is_set())


def ledger_join(
    settings: Settings, ranges: dict[tuple[str, int], tuple[int, int]], window: int
) -> LedgerJoin:
    """The join of these source ranges with the live ledger (created when absent)."""
    conf = settings.kafka_common()
    retention_ms = int(settings.ledger_retention_hours * 3_600_000)
    ledger_partitions = ensure_ledger_topic(
        conf,
        settings.ledger_topic_name,
        source_partition_count(conf, settings),
        retention_ms,
    )
    return LedgerJoin(
        conf,
        settings.ledger_topic_name,
        ledger_partitions,
        ranges,
        window=window,
        cutoff_ms=lambda: int(time.time() * 1000) - retention_ms,
    )


def _add(total: RunSummary, part: RunSummary) -> None:
    total.consumed += part.consumed
    total.delivered.update(part.delivered)
    total.dead_lettered.update(part.dead_lettered)
    total.dropped.update(part.dropped)
    total.api_calls += part.api_calls
    total.api_retries += part.api_retries
    total.skipped += part.skipped
    total.filtered += part.filtered


def _run_once(consumer: SignalConsumer, bar: _Progress) -> RunSummary:
    from pipeline.kafka.runner import install_signal_handlers

    install_signal_handlers(consumer)
    return bar.follow(consumer, 0)


class _Progress:
    """A progress bar over one or more consumers' reads (off: nothing shown)."""

    def __init__(self, total: int, description: str, *, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, unit="events", desc=description, file=sys.stderr, smoothing=0.1
            )

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def follow(self, consumer: SignalConsumer, before: int) -> RunSummary:
        """``consumer.run()``, the bar showing ``before`` plus what it has read."""
        bar = self._bar
        if bar is None:
            return consumer.run()
        done = threading.Event()

        def follow() -> None:
            while not done.wait(0.5):
                bar.update(before + consumer.summary.consumed - bar.n)

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            return consumer.run()
        finally:
            done.set()
            follower.join()
            bar.update(before + consumer.summary.consumed - bar.n)


def report(summary: RunSummary) -> dict[str, Any]:
    return {
        "read": summary.consumed,
        "sent": summary.delivered_total,
        "skipped_already_delivered": summary.skipped,
        "dead_lettered": summary.dead_lettered_total,
        "dropped": sum(summary.dropped.values()),
        "filtered": summary.filtered,
    }
