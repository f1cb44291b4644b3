"""Holding back without losing: backpressure on partitions assigned during a Connect
outage, and a schema registry that cannot answer (hold, re-read, never dead-letter).
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer
from devtools.clickstream import clickstream
from devtools.producer import load_schema

from pipeline.codec.avro import encode_confluent
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.kafka.consumer import SignalConsumer
from tests.faults.fake_registry import fake_registry, schema, server_error
from tests.integration.connect_stub import connect_stub
from tests.integration.consumer_harness import (
    BackgroundConsumer,
    expected_signals,
    new_topics,
    produce,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration

LIMIT = 2 * 1024 * 1024  # PIPELINE_MAX_BUFFERED_BYTES of the test


class Peak:
    """Samples a consumer's buffered bytes every 5 ms; the peak since the last reset."""

    def __init__(self, consumer: SignalConsumer) -> None:
        self._consumer = consumer
        self.value = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.value = max(self.value, self._consumer.buffered_bytes)

    def reset(self) -> None:
        self.value = self._consumer.buffered_bytes

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _paused(consumer: SignalConsumer) -> float:
    value = consumer.metrics.registry.get_sample_value("connect_signals_paused_partitions")
    return value or 0.0


def test_a_partition_assigned_during_an_outage_stays_under_the_memory_bound(kafka_bootstrap):
    """Two members during a Connect outage; one leaves, its partition moves to the other,
    which is paused: the new partition joins the pause, memory stays bounded."""
    events = list(clickstream(12_000, seed=31, invalid_ratio=0, v1_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, events)
    with connect_stub() as connect:
        connect.outage.set()
        settings = settings_for(
            kafka_bootstrap,
            topic,
            dlq,
            connect.url,
            max_buffered_bytes=LIMIT,
            drain_timeout_s=0.5,
            transactions=False,
        )
        # the leaving member starts first: the partition it hands over later is one the
        # other member never read (librdkafka keeps the pause of a partition it had)
        second = BackgroundConsumer(settings).start()
        wait_for(lambda: _paused(second.consumer) == 2, 30, "the leaving member paused")
        first = BackgroundConsumer(settings).start()
        wait_for(lambda: _paused(first.consumer) == 1, 30, "the staying member paused")
        assert _paused(second.consumer) == 1  # one partition handed over
        peak = Peak(first.consumer)
        peak.reset()
        second.stop()  # its partition goes back to the first member, which is paused
        wait_for(lambda: _paused(first.consumer) == 2, 30, "the partition back, paused")
        time.sleep(1.0)  # what an unpaused partition would read in this time: megabytes
        peak.stop()
        # one consume() call of the new partition can land before the pause (500 records)
        assert peak.value < LIMIT + 500 * 3_000, peak.value
        assert first.consumer.summary.consumed < len(events) // 2
        connect.outage.clear()  # Connect is back: everything arrives, once
        wait_for(lambda: len(connect.accepted) == len(events), 60, "all delivered")
        first.stop()
    assert connect.duplicates == 0


def _member_in_a_new_group(
    bootstrap: str, topic: str, dlq: str, graphql_url: str, registry_url: str
) -> BackgroundConsumer:
    settings = settings_for(
        bootstrap,
        topic,
        dlq,
        graphql_url,
        schema_registry_url=registry_url,
        group_id=f"group-{uuid.uuid4().hex[:8]}",
    )
    return BackgroundConsumer(settings).start()


def test_an_unavailable_registry_holds_the_partition_and_never_dead_letters(kafka_bootstrap):
    events = list(clickstream(60, seed=41, invalid_ratio=0, v1_ratio=0))
    ids = {t: n for n, t in enumerate(sorted({e.signal_type for e in events}), start=100)}
    schemas = {t: load_schema(DEFAULT_AVRO_DIR, 2, t) for t in ids}
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for event in events:
        value = encode_confluent(ids[event.signal_type], schemas[event.signal_type], event.record)
        producer.produce(topic, key=event.record["sessionId"].encode(), value=value)
    assert producer.flush(30) == 0
    with fake_registry() as (registry, registry_url), connect_stub() as connect:
        registry.default = server_error()
        member = _member_in_a_new_group(kafka_bootstrap, topic, dlq, connect.url, registry_url)
        wait_for(lambda: sum(registry.requests.values()) >= 3, 30, "retried while down")
        wait_for(lambda: _paused(member.consumer) == 1, 10, "held, and /metrics says so")
        assert member.consumer.health.liveness()[0]  # /healthz stays alive
        assert not connect.accepted
        for signal_type, schema_id in ids.items():
            registry.answers[schema_id] = schema(json.dumps(schemas[signal_type]))
        wait_for(lambda: len(connect.accepted) == len(events), 30, "all delivered")
        summary = member.stop()
    assert summary.dead_lettered_total == 0
    assert set(connect.accepted) == set(expected_signals(events))
    assert connect.duplicates == 0


def test_a_registry_hanging_on_one_id_holds_only_that_partition(kafka_bootstrap):
    """The registry answers one id's look-ups only after 30 s (the client gives up after
    10): the partition whose records need it waits, the other keeps delivering within
    seconds, and once the registry answers both are delivered, nothing dead-lettered.
    A look-up made in the poll loop would stop both partitions for the 10 s."""
    events = list(clickstream(40, seed=43, invalid_ratio=0, v1_ratio=0))
    kinds = sorted({e.signal_type for e in events})
    schemas = {t: load_schema(DEFAULT_AVRO_DIR, 2, t) for t in kinds}
    hanging = {t: 300 + n for n, t in enumerate(kinds)}  # partition 0's ids
    answering = {t: 400 + n for n, t in enumerate(kinds)}  # partition 1's ids
    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def produce_to(partition: int, batch: list, ids: dict[str, int]) -> None:
        for event in batch:
            kind = event.signal_type
            value = encode_confluent(ids[kind], schemas[kind], event.record)
            producer.produce(topic, partition=partition, value=value)
        assert producer.flush(30) == 0

    first, later = events[:20], events[20:]
    with fake_registry() as (registry, registry_url), connect_stub() as connect:
        for kind in kinds:
            registry.answers[hanging[kind]] = schema(json.dumps(schemas[kind]))
            registry.answers[answering[kind]] = schema(json.dumps(schemas[kind]))
            registry.hangs[hanging[kind]] = 30.0
        produce_to(0, first, hanging)
        member = _member_in_a_new_group(kafka_bootstrap, topic, dlq, connect.url, registry_url)
        wait_for(lambda: any(registry.requests[i] for i in hanging.values()), 30, "asked")
        produced_at = time.monotonic()
        produce_to(1, later, answering)
        wanted = set(expected_signals(later))
        wait_for(lambda: wanted <= set(connect.accepted), 30, "partition 1 delivered")
        waited_s = time.monotonic() - produced_at
        assert not set(expected_signals(first)) & set(connect.accepted)  # still waiting
        registry.hangs.clear()
        wait_for(lambda: len(connect.accepted) == len(events), 40, "all delivered")
        summary = member.stop()
    assert waited_s < 5.0, f"partition 1 waited {waited_s:.1f} s behind the hanging look-up"
    assert summary.dead_lettered_total == 0
    assert set(connect.accepted) == set(expected_signals(events))
    assert connect.duplicates == 0
