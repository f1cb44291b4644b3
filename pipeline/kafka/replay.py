"""``connect-pipeline replay``: re-read a range of the source topics, for backfills.

A replay reads explicit partitions from given offsets (or timestamps) up to the end
offsets captured when it starts, in its own consumer group (the live group's offsets
never move), through the same path as the live consumer: the ledger skips what
Connect already accepted, so only what is missing is sent.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click
import structlog
from confluent_kafka import Consumer, TopicPartition

from pipeline.config import Settings
from pipeline.kafka.consumer import Bounds, RecordOrigin, RunSummary, SignalConsumer

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
                raise click.UsageError(f"topic {topic!r} does not exist")
            known = sorted(metadata[topic].partitions)
            chosen = [p for p in known if not partitions or p in partitions]
            missing = set(partitions) - set(known)
            if missing:
                raise click.UsageError(f"{topic} has no partition {sorted(missing)}")
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
) -> RunSummary:
    """Read the bounded range through the pipeline; returns what it did."""
    from pipeline.kafka.runner import build_processor, install_signal_handlers

    consumer = SignalConsumer(settings, build_processor(settings), bounds=bounds, origin=origin)
    install_signal_handlers(consumer)
    total = sum(max(0, bounds.end[k] - s) for k, s in bounds.start.items())
    if not progress:
        return consumer.run()
    from tqdm import tqdm

    done = threading.Event()
    bar = tqdm(total=total, unit="events", desc=description, file=sys.stderr, smoothing=0.1)

    def follow() -> None:
        while not done.wait(0.5):
            bar.update(consumer.summary.consumed - bar.n)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        return consumer.run()
    finally:
        done.set()
        follower.join()
        bar.update(consumer.summary.consumed - bar.n)
        bar.close()


def report(summary: RunSummary) -> dict[str, Any]:
    return {
        "read": summary.consumed,
        "sent": summary.delivered_total,
        "skipped_already_delivered": summary.skipped,
        "dead_lettered": summary.dead_lettered_total,
        "dropped": sum(summary.dropped.values()),
        "filtered": summary.filtered,
    }
