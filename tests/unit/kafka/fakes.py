"""Stand-ins for librdkafka's producer and consumer, for unit tests of one piece."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from pipeline.kafka.partition_state import PartitionState
from pipeline.kafka.records import Pending


class FakeProducer:
    """Records produce() calls; refuses the first ``refuse`` of them with ``error``."""

    def __init__(self, refuse: int = 0, error: int = KafkaError.MSG_SIZE_TOO_LARGE) -> None:
        self.calls: list[dict[str, Any]] = []
        self._refuse = refuse
        self._error = error

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self._refuse:
            self._refuse -= 1
            raise KafkaException(KafkaError(self._error))
        self.calls.append({"topic": topic, **kwargs})

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def flush(self, timeout: float = 0.0) -> int:
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[list[TopicPartition]] = []
        self.paused: list[tuple[str, int]] = []
        self.resumed: list[tuple[str, int]] = []
        self.seeks: list[tuple[str, int, int]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.commits.append(offsets)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.extend((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed.extend((tp.topic, tp.partition) for tp in partitions)

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def pending(state: PartitionState, offset: int, value: bytes = b"v", key: str = "") -> Pending:
    message = Message(
        topic=state.key[0],
        partition=state.key[1],
        offset=offset,
        key=b"k",
        value=value,
        headers=[("h", b"v")],
    )
    state.offsets.track(offset)
    return Pending(message, len(value), "order", state, offset, key or f"key-{offset}")
