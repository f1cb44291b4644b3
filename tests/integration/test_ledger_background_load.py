"""The ledger load runs beside the poll loop (issue 14): a long load keeps the group,
a revoke cancels it, and no record is handled before its partition's tail is loaded.

Real broker, the simulator with server-side idempotency OFF (every signal sent twice
is counted). The load is made long by a delay injected before the real read (what a
ledger of tens of millions of old records costs), and that delay gives up when the
load is cancelled, as the real read does between fetches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from devtools.clickstream import clickstream
from devtools.producer import EventEncoder

from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.kafka.ledger import ensure_ledger_topic
from pipeline.kafka.ledger_loader import LedgerLoader, LoadCancelled, TailRequest
from pipeline.kafka.ledger_records import batch_key, encode_batch, topic_id
from tests.integration.consumer_harness import (
    BackgroundConsumer,
    expected_signals,
    new_topics,
    settings_for,
    wait_for,
)
from tests.integration.ledger_harness import (  # noqa: F401  (fixtures)
    module_simulator_fixture,
    simulator_fixture,
)

pytestmark = pytest.mark.integration


@dataclass
class SlowLoads:
    """Each load waits ``delays[n]`` seconds (the last one for any later) before reading."""

    delays: list[float]
    loads: list[list[tuple[str, int]]] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)
    cancelled: int = 0


def slow_loads(monkeypatch: pytest.MonkeyPatch, *delays: float) -> SlowLoads:
    slow = SlowLoads(list(delays))
    real = LedgerLoader.load_tails

    def load_tails(
        self: LedgerLoader,
        requests: Iterable[TailRequest],
        ledger_partitions: int,
        *,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> dict[tuple[str, int], int | None]:
        requests = list(requests)
        number = len(slow.loads)
        slow.loads.append(sorted((r.topic, r.partition) for r in requests))
        slow.started.append(time.monotonic())
        deadline = time.monotonic() + slow.delays[min(number, len(slow.delays) - 1)]
        while time.monotonic() < deadline:
            if cancelled():
                slow.cancelled += 1
                raise LoadCancelled("revoked")
            time.sleep(0.05)
        try:
            return real(self, requests, ledger_partitions, cancelled=cancelled)
        finally:
            slow.ended.append(time.monotonic())

    monkeypatch.setattr(LedgerLoader, "load_tails", load_tails)
    return slow


def produce_to(bootstrap: str, topic: str, partition: int, events: list[Any]) -> None:
    encoder = EventEncoder(DEFAULT_AVRO_DIR)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for event in events:
        producer.produce(topic, value=encoder.encode(event), partition=partition)
    assert producer.flush(30) == 0


def spy_retired(background: BackgroundConsumer) -> list[set[tuple[str, int]]]:
    """Every set of partitions the consumer retires (revoked or lost)."""
    consumer: Any = background.consumer
    retired: list[set[tuple[str, int]]] = []
    real = consumer._retire

    def retire(keys: set[tuple[str, int]]) -> None:
        retired.append(set(keys))
        real(keys)

    consumer._retire = retire
    return retired


def test_a_load_longer_than_max_poll_interval_keeps_the_group_then_the_partition_is_read(
    kafka_bootstrap: str, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = list(clickstream(120, seed=1401, invalid_ratio=0))
    keys = set(expected_signals(events))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_to(kafka_bootstrap, topic, 0, events)
    settings = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url,
        kafka_config={"max.poll.interval.ms": "6000"},
    )  # fmt: skip
    slow = slow_loads(monkeypatch, 9.0)  # half as long again as max.poll.interval.ms

    background = BackgroundConsumer(settings)
    retired = spy_retired(background)
    consumer = background.consumer
    background.start()
    try:
        wait_for(lambda: slow.started, 30, "the ledger load started")
        wait_for(lambda: time.monotonic() - slow.started[0] > 7.0, 15, "a load past 6 s")
        # the loop turns meanwhile; live, not ready; nothing handled before the load ends
        assert time.monotonic() - consumer.health.last_loop < 2.0
        live, details = consumer.health.liveness()
        ready, checks = consumer.health.readiness()
        assert live and details["ledger_loading"] == 1
        assert not ready and checks["ledger_loaded"] is False
        assert simulator.stats()["accepted"] == 0 and not slow.ended
        wait_for(lambda: simulator.stats()["accepted"] >= len(keys), 60, "all delivered")
        assert consumer.health.readiness()[1]["ledger_loaded"] is True
    finally:
        summary = background.stop()
    # one assignment, one load: the member never left the group
    assert len(slow.loads) == 1 and retired[:-1] == []
    stats = simulator.stats()
    assert stats["accepted"] == len(keys) and stats["duplicates"] == 0
    assert summary.delivered_total == len(keys)


def test_a_partition_revoked_during_its_load_is_loaded_again_when_given_back_and_skips_exactly(
    kafka_bootstrap: str, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = list(clickstream(240, seed=1402, invalid_ratio=0))
    halves = [events[:120], events[120:]]
    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    settings = settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url)
    ledger = settings.ledger_topic_name
    ensure_ledger_topic({"bootstrap.servers": kafka_bootstrap}, ledger, 2, 7 * 24 * 3_600_000)
    # Before this run: the first 40 events of each partition were delivered (format 3,
    # nothing committed), so a load that works skips exactly those 80.
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    delivered: set[str] = set()
    now = int(time.time() * 1000)
    for partition, half in enumerate(halves):
        produce_to(kafka_bootstrap, topic, partition, half)
        first = list(expected_signals(half[:40]))
        delivered.update(first)
        value = encode_batch(now, topic_id(topic), partition, list(enumerate(first)), 40)
        assert value is not None
        producer.produce(ledger, key=batch_key(value), value=value, partition=partition)
    assert producer.flush(30) == 0
    keys = set(expected_signals(events))
    slow = slow_loads(monkeypatch, 12.0, 0.5)

    background = BackgroundConsumer(settings)
    retired = spy_retired(background)
    background.start()
    other = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": settings.group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        wait_for(lambda: slow.started, 30, "the first load started")
        assert slow.loads[0] == [(topic, 0), (topic, 1)]
        # a second member joins during the load: one partition moves to it
        taken: list[int] = []
        stop = threading.Event()

        def member() -> None:
            other.subscribe([topic])
            while not stop.is_set():
                other.poll(0.1)  # reads nothing it commits: it only holds a partition
                if not taken and other.assignment():
                    taken.extend(tp.partition for tp in other.assignment())

        thread = threading.Thread(target=member, daemon=True)
        thread.start()
        wait_for(lambda: taken and retired, 40, "a partition revoked during the load")
        assert not slow.ended  # revoked while the load was under way
        moved = (topic, taken[0])
        assert retired[0] == {moved}
        stop.set()
        thread.join(10)
        other.close()  # the partition goes back: loaded again before it is read
        wait_for(lambda: simulator.stats()["accepted"] >= len(keys) - 80, 90, "all delivered")
        assert any(load == [moved] for load in slow.loads[1:])
    finally:
        summary = background.stop()
    stats = simulator.stats()
    assert stats["accepted"] == len(keys) - 80 and stats["duplicates"] == 0
    assert {row["key"] for row in simulator.signals()} == keys - delivered
    assert summary.skipped == 80
