"""Reading what a chaos run did: the simulator's record, the group's offsets, the dead letters."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import httpx
import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition


def group_offsets(
    bootstrap: str, group_id: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """The group's committed offset per partition (negative: none yet)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    try:
        wanted = [TopicPartition(topic, p) for p in partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=10)}
    except KafkaException:
        return {}
    finally:
        consumer.close()


def read_dead_letters(
    bootstrap: str, topic: str, expected: set[bytes], timeout_s: float
) -> list[bytes]:
    """Every record value on the dead-letter topic, read to the end.

    Committed records only. Counted by reading, never by watermarks (the embedded
    broker's undercount): read until every expected value was seen or the time is
    up, then a little longer so that extra records show.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-dlq-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            # A dead letter written in a transaction that was then aborted (a kill) is
            # void: only committed ones count, or a lost dead letter could hide.
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    missing = set(expected)
    deadline = time.monotonic() + timeout_s
    linger_until: float | None = None
    try:
        while time.monotonic() < (linger_until or deadline):
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    value = message.value() or b""
                    values.append(value)
                    missing.discard(value)
            if not missing and linger_until is None:
                linger_until = time.monotonic() + 2.0
    finally:
        consumer.close()
    return values


def accepted_rows(base_url: str) -> list[tuple[str, str | None]]:
    """From the simulator's dump: (signal key, batch key) per acceptance."""
    rows: list[tuple[str, str | None]] = []
    with (
        httpx.Client(timeout=120) as http,
        http.stream("GET", f"{base_url}/signals") as response,
    ):
        for line in response.iter_lines():
            if line.strip():
                row = orjson.loads(line)
                rows.append((str(row["key"]), row.get("batchKey")))
    return rows
