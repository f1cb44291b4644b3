"""A poison pill too large to dead-letter as it is: written without its value, never a stall."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from devtools.clickstream import clickstream
from devtools.producer import EventEncoder

from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.kafka.dead_letters import VALUE_OMITTED_HEADER, header_value
from tests.integration.consumer_harness import (
    API_KEY,
    APP_KEY,
    expected_signals,
    new_topics,
    read_topic,
    run_until_idle,
    settings_for,
)

pytestmark = pytest.mark.integration

#: Over the dead-letter producer's message.max.bytes (1,000,000) and the decoder's 1 MiB;
#: compressed, it reaches the topic through a producer allowing larger messages.
BIG = b"\xc3\x01" + b"\x00" * 1_200_000


@pytest.fixture
def simulator():
    from connect_sim.testing import run_simulator

    with run_simulator(api_key=API_KEY, app_keys=[APP_KEY]) as sim:
        yield sim


@pytest.mark.parametrize("transactions", [True, False], ids=["transactions", "plain"])
def test_an_oversized_value_is_dead_lettered_without_it_and_the_partition_moves_on(
    kafka_bootstrap, simulator, transactions
):
    events = list(clickstream(10, seed=3, invalid_ratio=0, v1_ratio=0))
    encoder = EventEncoder(DEFAULT_AVRO_DIR)
    values = [encoder.encode(e) for e in events[:5]]
    values += [b"\x07bad", BIG, b"\x07bad2"]
    values += [encoder.encode(e) for e in events[5:]]
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "message.max.bytes": 5_000_000,
            "compression.type": "zstd",
        }
    )
    for index, value in enumerate(values):
        producer.produce(topic, key=f"k{index}".encode(), value=value, headers=[("h", b"v")])
    assert producer.flush(30) == 0

    group = f"group-{uuid.uuid4().hex[:8]}"
    settings = settings_for(
        kafka_bootstrap,
        topic,
        dlq,
        simulator.graphql_url,
        group_id=group,
        transactions=transactions,
    )
    summary = run_until_idle(settings, idle_s=2.0)

    expected = expected_signals(events)
    accepted = {row["key"]: row["signal"] for row in simulator.signals()}
    assert {k: accepted.get(k) for k in expected} == expected
    assert summary.dead_lettered_total == 3

    dead = sorted(read_topic(kafka_bootstrap, dlq, 3), key=lambda m: m.offset())
    assert len(dead) == 3
    offsets = [int(header_value(m.headers(), "__connect.errors.offset")) for m in dead]
    assert offsets == [5, 6, 7]
    small, big, small2 = dead
    assert (small.value(), small2.value()) == (b"\x07bad", b"\x07bad2")
    assert header_value(small.headers(), VALUE_OMITTED_HEADER) is None
    assert big.value() is None
    assert big.key() == b"k6"  # the original key and headers stay
    assert header_value(big.headers(), "h") == "v"
    assert header_value(big.headers(), VALUE_OMITTED_HEADER) == str(len(BIG))
    assert header_value(big.headers(), "connect.signals.reason") == "undecodable"
    message = header_value(big.headers(), "__connect.errors.exception.message") or ""
    assert message.startswith(f"value of {len(BIG)} bytes omitted")

    reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        (committed,) = reader.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        reader.close()
    assert committed.offset == len(values)
