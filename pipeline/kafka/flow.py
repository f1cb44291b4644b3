"""Flow control: pause on memory or a failing API, and hold partitions the schema
registry cannot serve yet. Only the loop thread calls it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from confluent_kafka import Consumer, TopicPartition

from pipeline.codec.registry_answers import SchemaLookupRunning
from pipeline.kafka.records import TopicPartitionKey

log = structlog.get_logger("pipeline.kafka.flow")


class FlowControl:
    def __init__(
        self,
        consumer: Consumer,
        max_buffered_bytes: int,
        assigned: Callable[[], list[TopicPartitionKey]],
        *,
        initial_backoff_ms: int,
        max_backoff_ms: int,
    ) -> None:
        self._consumer = consumer
        self._limit = max_buffered_bytes
        self._assigned = assigned
        self._initial_ms = initial_backoff_ms
        self._max_ms = max_backoff_ms
        self.paused = False
        self.held: dict[TopicPartitionKey, float] = {}  # partition: when to read again
        #: partitions the registry could not serve, by failed attempts in a row
        self.attempts: dict[TopicPartitionKey, int] = {}
        self._new: list[TopicPartition] = []

    # --- backpressure ------------------------------------------------------------------

    def newly_assigned(self, partitions: list[TopicPartition]) -> None:
        """From the assign callback, where pause() has no effect (librdkafka assigns
        after it returns): the loop's next turn applies the pause to them."""
        self._new.extend(partitions)

    def after_poll(self) -> None:
        if not self._new:
            return
        new, self._new = self._new, []
        held = [tp for tp in new if self.paused or (tp.topic, tp.partition) in self.held]
        if held:
            self._consumer.pause(held)
            log.info("newly assigned partitions paused", partitions=len(held))

    def apply(self, buffered_bytes: int, api_failing: bool) -> None:
        over = buffered_bytes > self._limit or api_failing
        under = buffered_bytes < self._limit // 2 and not api_failing
        if over and not self.paused:
            partitions = self._unheld()
            if partitions:
                self._consumer.pause(partitions)
                self.paused = True
                log.info("partitions paused", buffered_bytes=buffered_bytes)
        elif under and self.paused:
            partitions = self._unheld()
            if partitions:
                self._consumer.resume(partitions)
            self.paused = False
            log.info("partitions resumed", buffered_bytes=buffered_bytes)
        if self.held:
            self._release_due()

    def _unheld(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._assigned() if (t, p) not in self.held]

    def paused_count(self) -> int:
        return len(self._assigned()) if self.paused else len(self.held)

    # --- the schema registry cannot answer: hold the partition, read the record again --

    def hold(self, key: TopicPartitionKey, offset: int, error: Exception) -> None:
        attempt = self.attempts.get(key, 0)
        self.attempts[key] = attempt + 1
        delay_ms = min(self._max_ms, self._initial_ms << min(attempt, 30))
        self.held[key] = time.monotonic() + delay_ms / 1000
        self._consumer.pause([TopicPartition(*key)])
        self._consumer.seek(TopicPartition(key[0], key[1], offset))
        if isinstance(error, SchemaLookupRunning):  # slow, not failing: no warning
            log.info(
                "schema look-up running: partition held, the record is read again",
                partition=f"{key[0]}[{key[1]}]",
                retry_in_s=delay_ms / 1000,
            )
            return
        log.warning(
            "schema registry unavailable: partition held, the record is read again",
            partition=f"{key[0]}[{key[1]}]",
            offset=offset,
            retry_in_s=delay_ms / 1000,
            error=str(error),
        )

    def served(self, key: TopicPartitionKey) -> None:
        """A record of this partition decoded: its backoff starts over."""
        if self.attempts:
            self.attempts.pop(key, None)

    def _release_due(self) -> None:
        now = time.monotonic()
        assigned = set(self._assigned())
        for key in [k for k, until in self.held.items() if until <= now]:
            del self.held[key]
            if not self.paused and key in assigned:
                self._consumer.resume([TopicPartition(*key)])

    def forget(self, keys: set[TopicPartitionKey]) -> None:
        for key in keys:
            self.held.pop(key, None)
            self.attempts.pop(key, None)
