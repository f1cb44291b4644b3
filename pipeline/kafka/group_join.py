"""The consumer group join, started before the rest of the process is built.

On Tansu a new member's join waits about half of ``session.timeout.ms`` (3 s with the
default 6,000; Apache Kafka waits ``group.initial.rebalance.delay.ms`` for a new group),
which is most of a start. ``connect-pipeline run`` subscribes as soon as its settings are
read and builds everything else (imports, clients, the dead-letter and ledger topic
checks, ``init_transactions``, warm-ups) while librdkafka's own thread waits for the
assignment. Nothing happens early: the rebalance and statistics callbacks run only
inside ``consume()``, and the loop's first ``consume()`` comes after the consumer
attached its own (``attach``, ``on_stats``).

This module imports only confluent-kafka and the settings, so that the join starts
before the heavier imports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from pipeline.config import Settings

Rebalance = Callable[[Consumer, list[TopicPartition]], None]


def consumer_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        # consumer lag and broker state for /metrics and /readyz (kafka_config may override)
        "statistics.interval.ms": 5000,
        # A broker that holds a fetch until this wait ends (the embedded one does) would
        # hold every record that long (librdkafka: 500 ms); Apache Kafka answers as soon
        # as data arrives, so it only bounds an idle fetch (kafka_config may override).
        "fetch.wait.max.ms": 50,
        # A fetch response over the prefetch bounds (queued.min.messages, ...kbytes; one
        # fetch of 6 partitions is ~18,000 small records) postpones that partition's next
        # fetch this long (librdkafka: 1,000 ms): on a backlog the loop emptied the queue,
        # then waited up to a second for records (kafka_config may override).
        "fetch.queue.backoff.ms": 20,
        **settings.kafka_common(),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(100, settings.session_timeout_ms // 5),
        "queued.max.messages.kbytes": settings.fetch_queue_kbytes,
        "queued.min.messages": settings.fetch_queue_messages,
        # Producers may write in transactions: never read what they abort.
        "isolation.level": "read_committed",
    }
    if settings.group_instance_id:
        conf["group.instance.id"] = settings.group_instance_id
    return conf


def _unattached(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """Before ``attach``: only ``close()`` of a start that failed gets here; the client
    then assigns or unassigns by itself."""


class JoiningConsumer(Consumer):
    """A group member subscribed at construction; its owner attaches the rebalance and
    statistics callbacks before its first ``consume()``."""

    def __init__(self, settings: Settings) -> None:
        self._assigned: Rebalance = _unattached
        self._revoked: Rebalance = _unattached
        self._lost: Rebalance = _unattached
        self._stats: Callable[[str], None] | None = None
        conf = consumer_config(settings)
        super().__init__(
            {**conf, "stats_cb": self._on_stats, "logger": logging.getLogger("librdkafka")}
        )
        self.topics: tuple[str, ...] = tuple(settings.source_topics)
        self.subscribe(
            list(self.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def attach(self, *, on_assign: Rebalance, on_revoke: Rebalance, on_lost: Rebalance) -> None:
        """The owner's rebalance callbacks, in place of ``subscribe()`` (already done)."""
        self._assigned, self._revoked, self._lost = on_assign, on_revoke, on_lost

    def on_stats(self, callback: Callable[[str], None]) -> None:
        """Where librdkafka's statistics go (dropped until set)."""
        self._stats = callback

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned(consumer, partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoked(consumer, partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._lost(consumer, partitions)

    def _on_stats(self, stats_json: str) -> None:
        if self._stats is not None:
            self._stats(stats_json)
