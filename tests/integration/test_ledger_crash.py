"""Crashes against the ledger: a SIGKILLed replica, and the one window left open.

Real broker, replicas as real processes, the simulator over HTTP with its server-side
idempotency OFF so that every signal the pipeline sends twice is counted.
"""

from __future__ import annotations

import signal
import time

import pytest
from devtools.clickstream import clickstream

from pipeline.kafka.ledger import duplicate_bound
from tests.integration.consumer_harness import (
    consumer_process,
    expected_signals,
    new_topics,
    produce,
    run_until_idle,
    settings_for,
    wait_for,
)
from tests.integration.ledger_harness import (  # noqa: F401  (fixtures)
    module_simulator_fixture,
    replay_all,
    seal,
    simulator_fixture,
)

pytestmark = pytest.mark.integration


def steady(sim, seconds: float, timeout_s: float = 30) -> int:
    """Wait until the simulator's accepted count stops moving for that long."""
    last, since = sim.stats()["accepted"], time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() - since < seconds:
        assert time.monotonic() < deadline, "the accepted count never settled"
        time.sleep(0.1)
        now = sim.stats()["accepted"]
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_sigkill_of_one_replica_then_a_replay_sends_no_signal_twice(
    kafka_bootstrap, simulator, tmp_path
):
    events = list(clickstream(1200, seed=71, invalid_ratio=0))
    sealing = list(clickstream(4, seed=72, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=4)
    produce(kafka_bootstrap, topic, events)
    seal(kafka_bootstrap, topic, 4, sealing)
    expected = expected_signals(events + sealing)
    assert len(expected) == len(events) + len(sealing)
    simulator.set_faults(latency_ms=20)
    # No commit before the kill: the victim's offsets and transaction are lost, so the
    # survivor re-reads all it delivered; only the ledger (read uncommitted) stops it.
    base = settings_for(
        kafka_bootstrap,
        topic,
        dlq,
        simulator.graphql_url,
        batch_max_signals=20,
        commit_interval_ms=60_000,
    )
    replicas = [
        consumer_process(
            base.model_copy(update={"transactional_id": f"{base.group_id}-{name}"}),
            tmp_path / f"{name}.log",
        )
        for name in ("a", "b")
    ]
    victim, survivor = replicas
    try:
        wait_for(lambda: simulator.stats()["accepted"] >= 300, 60, "first deliveries")
        # Connect stops accepting (every call 503, retried): once the last acceptance
        # has reached the ledger, the kill lands outside the duplicate window, with
        # batches in flight and an open transaction that never commits.
        simulator.set_faults(error_rate=1.0)
        partial = steady(simulator, 1.0)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert partial < len(expected), "the kill came too late to test anything"
        simulator.set_faults(latency_ms=2)
        wait_for(lambda: simulator.stats()["accepted"] >= len(expected), 90, "survivor took over")
        steady(simulator, 1.0)
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(30) == 0
    finally:
        for process in replicas:
            if process.poll() is None:
                process.kill()
                process.wait(10)

    stats = simulator.stats()
    assert stats["duplicates"] == 0
    assert stats["accepted"] == len(expected)

    # A replay of the whole range afterwards: everything is already delivered.
    summary = replay_all(base, topic)
    assert summary.consumed == len(expected)
    assert summary.delivered_total == 0 and summary.skipped == len(expected)
    stats = simulator.stats()
    assert stats["duplicates"] == 0 and stats["accepted"] == len(expected)
    assert {row["key"] for row in simulator.signals()} == set(expected)


def test_the_duplicate_window_is_the_batches_in_flight_at_the_crash(
    kafka_bootstrap, simulator, tmp_path
):
    """SIGKILL while batches are in flight: Connect accepts them after the crash, their
    ledger records are never written, so the restart sends them again: the window
    ``duplicate_bound`` names, and no more."""
    events = list(clickstream(800, seed=73, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, events)
    latency_s = 0.3
    simulator.set_faults(latency_ms=latency_s * 1000)
    settings = settings_for(
        kafka_bootstrap,
        topic,
        dlq,
        simulator.graphql_url,
        batch_max_signals=25,
        max_in_flight_batches=4,
        transactional_id=f"group-{topic}-only",
    )
    process = consumer_process(settings, tmp_path / "consumer.log")
    try:
        wait_for(lambda: simulator.stats()["accepted"] >= 200, 60, "first deliveries")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    accepted_at_kill = steady(simulator, 1.0)  # the calls in flight complete server-side
    assert accepted_at_kill < len(events)
    simulator.set_faults(latency_ms=0)

    run_until_idle(settings, idle_s=1.5)  # the same replica restarts

    stats = simulator.stats()
    duplicates = stats["duplicates"]
    bound = duplicate_bound(settings, min_call_latency_s=latency_s)
    in_flight_signals = settings.max_in_flight_batches * settings.batch_max_signals
    print(f"window: {duplicates} duplicates; in flight {in_flight_signals}, bound {bound}")
    assert 0 < duplicates <= in_flight_signals <= bound, (duplicates, in_flight_signals, bound)
    assert stats["unique_keys"] == len(events)  # and nothing lost
