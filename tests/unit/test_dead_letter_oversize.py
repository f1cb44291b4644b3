"""``SignalConsumer._dead_letter`` when the write is refused as too large (producer stubbed).

The integration test (tests/integration/test_oversize.py) covers the producer's own limit
on a real broker; the embedded broker enforces no topic max.message.bytes, so a refusal
in the delivery report is driven here through a stub producer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from pipeline.config import Settings
from pipeline.kafka.consumer import Pending, SignalConsumer
from pipeline.kafka.dead_letters import VALUE_OMITTED_HEADER, header_value
from pipeline.kafka.offsets import PartitionOffsets
from pipeline.signals.outcomes import Reason, Rejection
from tests.fuzz.hostile import processor

TOO_LARGE = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)


class StubProducer:
    """Records produce() calls; refuses the first ``refuse_first`` of them synchronously."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self._refuse = refuse_first

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self._refuse:
            self._refuse -= 1
            raise KafkaException(TOO_LARGE)
        self.calls.append({"topic": topic, **kwargs})

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def flush(self, timeout: float = 0.0) -> int:
        return 0


@contextmanager
def _consumer(transactions: bool, stub: StubProducer) -> Iterator[SignalConsumer]:
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:9",
        topics=["clicks"],
        dlq_topic="clicks-dlq",
        transactions=transactions,
        http_port=0,
    )
    consumer = SignalConsumer(settings, processor())
    consumer._producer = stub  # type: ignore[assignment]
    try:
        yield consumer
    finally:
        consumer._consumer.close()


def _pending(consumer: SignalConsumer, value: bytes) -> Pending:
    message = Message(
        topic="clicks", partition=0, offset=41, key=b"k", value=value, headers=[("h", b"v")]
    )
    tracker = consumer._offsets.setdefault(("clicks", 0), PartitionOffsets())
    tracker.track(41)
    return Pending(message, len(value), "order", tracker, 41, consumer._epoch)


REJECTION = Rejection.single(Reason.UNDECODABLE, "", "not Avro")


@pytest.mark.parametrize("transactions", [True, False])
def test_a_refusal_in_the_delivery_report_sends_it_again_without_the_value(transactions):
    stub = StubProducer()
    with _consumer(transactions, stub) as consumer:
        value = b"x" * 10_000  # under the producer's limit, over the topic's (say)
        consumer._dead_letter(_pending(consumer, value), REJECTION)
        assert stub.calls[0]["value"] == value
        stub.calls[0]["on_delivery"](TOO_LARGE, None)
        if transactions:  # the commit aborts and the record is read again
            consumer._dead_letter(_pending(consumer, value), REJECTION)
        else:
            consumer._retry_failed_dead_letters()
        again = stub.calls[1]
        assert again["value"] is None and again["key"] == b"k"
        assert header_value(again["headers"], VALUE_OMITTED_HEADER) == "10000"
        assert header_value(again["headers"], "h") == "v"
        again["on_delivery"](None, None)
        assert consumer.summary.dead_lettered_total == 1
        assert not consumer._dlq_level  # forgotten once written


@pytest.mark.parametrize("transactions", [True, False])
def test_a_value_over_the_limit_is_never_offered_and_a_refused_one_is_resent(transactions):
    stub = StubProducer()
    with _consumer(transactions, stub) as consumer:
        consumer._dead_letter(_pending(consumer, b"y" * 1_000_000), REJECTION)
        (call,) = stub.calls
        assert call["value"] is None
        assert header_value(call["headers"], VALUE_OMITTED_HEADER) == "1000000"
    stub = StubProducer(refuse_first=1)  # the estimate too low: refused at produce()
    with _consumer(transactions, stub) as consumer:
        consumer._dead_letter(_pending(consumer, b"z" * 500), REJECTION)
        (call,) = stub.calls
        assert call["value"] is None
        assert header_value(call["headers"], VALUE_OMITTED_HEADER) == "500"
