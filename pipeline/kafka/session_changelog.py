"""The session changelog topic: created compacted, partitioned like the source, and
read back on assign.

Partition ``p`` of every source topic writes to changelog partition ``p`` (modulo
the changelog's count, should the source grow), keys naming the source topic
(``pipeline.sessions.changelog``). Compaction keeps the latest value per key and
drops tombstones, so a restore reads about one record per open or recently closed
session: its cost follows the open sessions, not the history.

Read ``read_committed``: what an aborted transaction wrote never happened. (The
embedded Tansu broker shows aborted records anyway; the store stays right because
every value it reads is a whole state as of its ``applied_offset``, see
``pipeline.sessions.store``.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any, Final

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from pipeline.config import Settings
from pipeline.kafka.topics import ensure_topic

log = structlog.get_logger("pipeline.kafka.session_changelog")

LOAD_TIMEOUT_S: Final = 300.0
ChangelogRecord = tuple[bytes, bytes | None]


def changelog_topic(settings: Settings) -> str:
    return f"{settings.group_id}-sessions"


def changelog_partition(source_partition: int, partitions: int) -> int:
    return source_partition % partitions


def ensure_changelog_topic(kafka_conf: dict[str, Any], topic: str, partitions: int) -> int:
    """Create the compacted changelog topic when absent; returns its partition count."""
    return ensure_topic(
        kafka_conf, topic, partitions, {"cleanup.policy": "compact"}, "session changelog"
    )


def read_changelog(
    kafka_conf: dict[str, Any], topic: str, partitions: Iterable[int]
) -> dict[int, list[ChangelogRecord]]:
    """Every record of the changelog partitions, in order, per partition (compacted:
    about one per live key). One reader for all of them: an assignment's partitions
    are read together."""
    wanted = sorted(set(partitions))
    records: dict[int, list[ChangelogRecord]] = {p: [] for p in wanted}
    if not wanted:
        return records
    consumer = Consumer(
        {
            **kafka_conf,
            "group.id": f"session-restore-{uuid.uuid4().hex[:12]}",  # never commits
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,  # a restore is a burst of fetches, not a wait for more
        }
    )
    started = time.monotonic()
    remaining = set(wanted)
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while remaining:
            if time.monotonic() > deadline:
                raise RuntimeError(f"session changelog {topic}{sorted(remaining)}: no progress")
            messages = consumer.consume(10_000, timeout=0.2)
            if messages:
                deadline = time.monotonic() + LOAD_TIMEOUT_S
            for message in messages:
                partition = message.partition() or 0
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"session changelog {topic}: {error}")
                    if partition in remaining:
                        remaining.discard(partition)
                        consumer.pause([TopicPartition(topic, partition)])
                    continue
                key = message.key()
                if key is not None and partition in remaining:
                    records[partition].append((key, message.value()))
    finally:
        consumer.close()
    log.info(
        "sessions read",
        topic=topic,
        partitions=wanted,
        records=sum(len(r) for r in records.values()),
        seconds=round(time.monotonic() - started, 3),
    )
    return records
