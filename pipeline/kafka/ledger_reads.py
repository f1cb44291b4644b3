"""Reading one ledger partition forward over an offset range: the loop the tail loader
and the replay join share."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

# It assigns partitions and never joins a group: a group's timeouts do not apply (a
# max.poll.interval.ms below the default session.timeout.ms makes librdkafka refuse it).
_GROUP_ONLY: Final = frozenset(
    {"max.poll.interval.ms", "session.timeout.ms", "heartbeat.interval.ms", "group.instance.id"}
)


def reader_config(kafka_conf: dict[str, Any], name: str) -> dict[str, Any]:
    """The configuration of a consumer that reads ledger partitions by assignment."""
    return {
        **{k: v for k, v in kafka_conf.items() if k not in _GROUP_ONLY},
        "group.id": f"{name}-{uuid.uuid4().hex[:12]}",  # never commits
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_uncommitted",  # see pipeline.kafka.ledger
        "auto.offset.reset": "earliest",
        # at the end a fetch answers at once (the default waits 500 ms for data,
        # which made a start wait about a second per ledger partition)
        "fetch.wait.max.ms": 10,
        # a small read-ahead: a chunk read back fetches little past its end, and the
        # prefetch queue (64 MiB by default) does not outweigh the keys it holds
        "queued.max.messages.kbytes": 4096,
        "fetch.max.bytes": 1_048_576,
        "max.partition.fetch.bytes": 1_048_576,
    }


def retention_bounds(
    consumer: Consumer, topic: str, partition: int, cutoff_ms: int, timeout_s: float
) -> tuple[int, int]:
    """(where the retention window starts, the end) of a ledger partition: records
    before the start are older than ``cutoff_ms`` and are skipped without reading."""
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
    query = [TopicPartition(topic, partition, cutoff_ms)]
    (found,) = consumer.offsets_for_times(query, timeout=timeout_s)
    if found.offset >= 0:
        low = max(low, found.offset)
    elif found.offset != OFFSET_BEGINNING:  # nothing within the window
        low = max(low, high)
    return low, high


def _keep_going() -> None:
    return None


def read_range(
    consumer: Consumer,
    topic: str,
    partition: int,
    start: int,
    upper: int | None,
    *,
    timeout_s: float,
    check: Callable[[], None] = _keep_going,
) -> Iterator[list[Message]]:
    """Batches of the messages of ``topic[partition]`` from ``start`` to ``upper``
    (exclusive; None: to the partition's end, which the consumer reports as EOF, so it
    needs ``enable.partition.eof``). A batch is yielded for every fetch that returned
    something (possibly nothing in range), and one last at the end. Raises RuntimeError
    when nothing arrives for ``timeout_s``; ``check`` runs before each fetch and may
    raise to cancel."""
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"ledger {topic}[{partition}]: no progress")
            messages = consumer.consume(10_000, timeout=0.05)
            if not messages:
                continue
            deadline = time.monotonic() + timeout_s
            batch: list[Message] = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        yield batch
                        return
                    raise RuntimeError(f"ledger {topic}: {error}")
                offset = message.offset() or 0
                if offset < start:
                    continue  # a fetch from before the assignment moved
                if upper is not None and offset >= upper:
                    yield batch
                    return
                batch.append(message)
            yield batch
    finally:
        consumer.unassign()
