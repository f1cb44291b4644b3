"""The consumer end to end: a real broker, the simulator over HTTP, real HTTP faults."""

from __future__ import annotations

import signal
import time

import pytest
from devtools.clickstream import clickstream

from pipeline.kafka.dead_letters import header_value
from tests.integration.consumer_harness import (
    API_KEY,
    APP_KEY,
    BackgroundConsumer,
    consumer_process,
    expected_signals,
    new_topics,
    produce,
    read_topic,
    run_until_idle,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def simulator():
    from connect_sim.testing import run_simulator

    with run_simulator(api_key=API_KEY, app_keys=[APP_KEY]) as sim:
        yield sim


def _accepted_by_key(sim) -> dict[str, dict]:
    return {row["key"]: row["signal"] for row in sim.signals()}


def test_valid_events_arrive_exactly_as_mapped_and_invalid_ones_are_dead_lettered(
    kafka_bootstrap, simulator
):
    events = list(clickstream(600, seed=11, invalid_ratio=0.05, v1_ratio=0.15))
    assert {e.signal_type for e in events} >= {"order", "pageView", "cartAbandonment"}
    assert any(e.edition == 1 for e in events) and any(e.invalid for e in events)
    topic, dlq = new_topics(kafka_bootstrap)
    produce(kafka_bootstrap, topic, events)

    summary = run_until_idle(settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url))

    expected = expected_signals(events)
    invalid = [e for e in events if e.invalid]
    assert len(expected) == len(events) - len(invalid)
    accepted = _accepted_by_key(simulator)
    assert accepted == expected  # every valid event, exactly as mapped, nothing else
    stats = simulator.stats()
    assert stats["duplicates"] == 0
    assert summary.delivered_total == len(expected)

    dead = read_topic(kafka_bootstrap, dlq, len(invalid))
    assert len(dead) == len(invalid)
    by_event_value = {m.value(): m for m in dead}
    from devtools.producer import EventEncoder

    from pipeline.config import DEFAULT_AVRO_DIR

    encoder = EventEncoder(DEFAULT_AVRO_DIR)
    for event in invalid:
        record = by_event_value[encoder.encode(event)]  # the original bytes, untouched
        headers = record.headers()
        assert header_value(headers, "connect.signals.reason") == "validation"
        assert header_value(headers, "__connect.errors.topic") == topic
        assert header_value(headers, "__connect.errors.stage") == "TRANSFORMATION"
        assert int(header_value(headers, "__connect.errors.offset")) >= 0
        assert header_value(headers, "__connect.errors.exception.message")
        assert record.key() == event.record["sessionId"].encode()


def test_earlier_edition_events_arrive_in_the_current_format(kafka_bootstrap, simulator):
    events = [e for e in clickstream(400, seed=5, invalid_ratio=0, v1_ratio=1.0) if e.edition == 1]
    orders = [e for e in events if e.signal_type == "order"]
    assert orders, "the sample needs earlier-edition orders"
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, events)
    run_until_idle(settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url))
    accepted = _accepted_by_key(simulator)
    assert len(accepted) == len(events)
    for order in orders:
        content = accepted[order.event_id]["signalContent"]
        for item in content["orderedItems"]:
            assert "quantity" not in item and item["itemQuantity"] >= 1
    errors = [accepted[e.event_id] for e in events if e.signal_type == "error"]
    assert all(s["signalContent"]["errorType"] in ("USER", "APPLICATION") for s in errors)


def test_faults_lose_nothing_and_dead_letter_nothing(kafka_bootstrap, simulator):
    events = list(clickstream(800, seed=3, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap)
    produce(kafka_bootstrap, topic, events)
    simulator.set_faults(
        seed=42,
        error_rate=0.2,
        rate_limit_burst=5,
        latency_ms=20,
        latency_jitter_ms=30,
        drop_connection_rate=0.05,
    )
    summary = run_until_idle(
        settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url, request_timeout_s=2)
    )
    assert _accepted_by_key(simulator) == expected_signals(events)
    assert summary.dead_lettered_total == 0
    assert summary.api_retries > 0  # the faults really happened
    assert read_topic(kafka_bootstrap, dlq, 0, timeout_s=3) == []


def test_whole_batch_rejection_dead_letters_only_the_bad_signal(kafka_bootstrap, simulator):
    events = list(clickstream(300, seed=9, invalid_ratio=0))
    # A signal the pipeline thinks valid but Connect rejects: an appKey it doesn't know.
    victim = events[137]
    victim.record["appKey"] = "unknown-app-key"
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, events)
    simulator.set_faults(reject_whole_batch=True)
    summary = run_until_idle(settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url))
    accepted = _accepted_by_key(simulator)
    assert victim.event_id not in accepted
    assert len(accepted) == len(events) - 1
    assert summary.dead_lettered == {"api_rejected": 1}
    (dead,) = read_topic(kafka_bootstrap, dlq, 1)
    assert header_value(dead.headers(), "connect.signals.reason") == "api_rejected"
    assert header_value(dead.headers(), "__connect.errors.stage") == "TASK_PUT"
    assert "appKey" in header_value(dead.headers(), "__connect.errors.exception.message")


def test_restart_resumes_from_committed_offsets(kafka_bootstrap, simulator):
    first = list(clickstream(200, seed=21, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap)
    settings = settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url)
    produce(kafka_bootstrap, topic, first)
    run_until_idle(settings)
    assert simulator.stats()["accepted"] == len(first)
    second = list(clickstream(150, seed=22, invalid_ratio=0))
    produce(kafka_bootstrap, topic, second)
    run_until_idle(settings)
    stats = simulator.stats()
    assert stats["accepted"] == len(first) + len(second)  # nothing read twice
    assert stats["duplicates"] == 0


def test_sigkill_mid_stream_loses_nothing(kafka_bootstrap, simulator, tmp_path):
    events = list(clickstream(3000, seed=31, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap)
    produce(kafka_bootstrap, topic, events)
    simulator.set_faults(seed=1, latency_ms=15)  # slow enough to be killed mid-stream
    settings = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, batch_max_signals=50
    )
    process = consumer_process(settings, tmp_path / "consumer.log")
    try:
        wait_for(lambda: simulator.stats()["accepted"] >= 300, 60, "first deliveries")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    partial = simulator.stats()["accepted"]
    assert partial < len(events), "the kill came too late to test anything"
    simulator.set_faults(latency_ms=0)
    run_until_idle(settings)
    expected = expected_signals(events)
    assert set(_accepted_by_key(simulator)) == set(expected)  # nothing lost


def test_sigterm_drains_commits_and_exits_zero(kafka_bootstrap, simulator, tmp_path):
    events = list(clickstream(1000, seed=41, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap)
    produce(kafka_bootstrap, topic, events)
    simulator.set_faults(latency_ms=10)
    settings = settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url)
    process = consumer_process(settings, tmp_path / "consumer.log")
    wait_for(lambda: simulator.stats()["accepted"] >= 100, 60, "first deliveries")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    after_stop = simulator.stats()["accepted"]
    simulator.set_faults(latency_ms=0)
    run_until_idle(settings)
    stats = simulator.stats()
    assert stats["accepted"] == len(events)
    # A clean stop committed what it delivered: the restart re-sent nothing.
    assert stats["duplicates"] == 0, (after_stop, stats)


def test_two_consumers_split_partitions_and_deliver_everything(kafka_bootstrap, simulator):
    events = list(clickstream(2000, seed=51, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=4)
    produce(kafka_bootstrap, topic, events)
    simulator.set_faults(latency_ms=5)
    settings = settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url)
    # two replicas on one host: each its own transactional id (else one fences the other)
    a = BackgroundConsumer(settings.model_copy(update={"transactional_id": "a"})).start()
    b = BackgroundConsumer(settings.model_copy(update={"transactional_id": "b"})).start()
    try:
        wait_for(lambda: simulator.stats()["accepted"] >= len(events), 90, "all delivered")
        time.sleep(1)
    finally:
        summary_a, summary_b = a.stop(), b.stop()
    assert summary_a.delivered_total > 0 and summary_b.delivered_total > 0
    assert set(_accepted_by_key(simulator)) == set(expected_signals(events))
