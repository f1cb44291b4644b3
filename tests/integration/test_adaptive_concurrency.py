"""Adaptive concurrency end to end: a burst of 429s halves the calls in flight down to
one, good answers bring them back to the maximum, and every signal arrives once."""

from __future__ import annotations

import threading

import pytest
from devtools.clickstream import clickstream

from tests.integration.consumer_harness import (
    API_KEY,
    APP_KEY,
    BackgroundConsumer,
    expected_signals,
    new_topics,
    produce,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def simulator():
    from connect_sim.testing import run_simulator

    with run_simulator(api_key=API_KEY, app_keys=[APP_KEY]) as sim:
        yield sim


def test_a_429_burst_drops_concurrency_and_it_recovers_with_nothing_lost_or_doubled(
    kafka_bootstrap, simulator
):
    events = list(clickstream(2_400, seed=5, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap)
    simulator.set_faults(latency_ms=15, retry_after_s=0.05)  # calls overlap: a backlog
    settings = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url,
        batch_max_signals=20, max_in_flight_batches=4,
    )  # fmt: skip
    background = BackgroundConsumer(settings)
    client = background.consumer._client
    observe = client.on_answer
    assert observe is not None  # adaptive concurrency is on by default
    limits: list[int] = []
    lock = threading.Lock()

    def recording(backpressure: bool, seconds: float) -> object:
        limit = observe(backpressure, seconds)
        with lock:
            limits.append(limit)  # type: ignore[arg-type]
        return limit

    client.on_answer = recording
    background.start()
    try:
        produce(kafka_bootstrap, topic, events)
        wait_for(lambda: simulator.stats()["accepted"] >= 400, 60, "first deliveries")
        assert max(limits) == 4
        simulator.set_faults(latency_ms=15, retry_after_s=0.05, burst=12, burst_fault="429")
        wait_for(lambda: 1 in limits, 30, "concurrency down to one")
        low = limits.index(1)
        wait_for(lambda: 4 in limits[low:], 60, "concurrency back to the maximum")
        wait_for(lambda: simulator.stats()["accepted"] >= len(events), 90, "every signal")
    finally:
        background.stop()
    accepted = {row["key"]: row["signal"] for row in simulator.signals()}
    assert accepted == expected_signals(events)  # nothing lost
    stats = simulator.stats()
    assert stats["duplicates"] == 0 and stats["accepted"] == len(events)  # nothing twice
    assert stats["requests"].get("429", 0) >= 12  # the burst really happened
