"""An assignment whose ledger tails load within QUICK_LOAD_S (a new or small ledger)
starts its partitions inside the assign callback, at the offsets the load looked up:
each record is fetched once (none fetched, dropped and read again), and librdkafka's
own offset look-up (100 ms of backoff without a committed offset) is skipped.

Real broker, the simulator with server-side idempotency OFF (a signal sent twice is
counted), a ``JoiningConsumer`` whose ``incremental_assign`` calls are recorded.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, TopicPartition
from devtools.clickstream import clickstream

from pipeline.config import Settings
from pipeline.kafka.consumer import SignalConsumer
from pipeline.kafka.group_join import JoiningConsumer
from pipeline.kafka.records import RunSummary
from pipeline.kafka.runner import build_processor
from tests.integration.consumer_harness import (
    expected_signals,
    new_topics,
    settings_for,
    wait_for,
)
from tests.integration.ledger_harness import (  # noqa: F401  (fixtures)
    module_simulator_fixture,
    simulator_fixture,
)
from tests.integration.test_ledger_background_load import produce_to

pytestmark = pytest.mark.integration


def _assigns(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[str, int, int]]]:
    """Every ``incremental_assign`` of a JoiningConsumer, as (topic, partition, offset)."""
    calls: list[list[tuple[str, int, int]]] = []
    real = JoiningConsumer.incremental_assign

    def incremental_assign(self: JoiningConsumer, partitions: list[TopicPartition]) -> None:
        calls.append(sorted((tp.topic, tp.partition, tp.offset) for tp in partitions))
        real(self, partitions)

    monkeypatch.setattr(JoiningConsumer, "incremental_assign", incremental_assign)
    return calls


def _run_until(settings: Settings, done: Any) -> tuple[SignalConsumer, RunSummary]:
    """One consumer (subscribed first, as ``connect-pipeline run`` does) until ``done()``."""
    consumer = SignalConsumer(settings, build_processor(settings), joined=JoiningConsumer(settings))
    summaries: list[RunSummary] = []
    thread = threading.Thread(target=lambda: summaries.append(consumer.run()), daemon=True)
    thread.start()
    try:
        wait_for(done, 60, "all delivered")
    finally:
        consumer.stop()
        thread.join(30)
    assert not thread.is_alive() and summaries
    return consumer, summaries[0]


def _consumed(consumer: SignalConsumer) -> float:
    value = consumer.metrics.registry.get_sample_value("connect_signals_events_consumed_total")
    return value or 0.0


def test_a_new_group_reads_each_record_once_from_the_start_set_in_the_callback(
    kafka_bootstrap: str, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = list(clickstream(80, seed=1701, invalid_ratio=0))
    keys = set(expected_signals(events))
    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    produce_to(kafka_bootstrap, topic, 0, events[:40])
    produce_to(kafka_bootstrap, topic, 1, events[40:])
    settings = settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url)
    assigns = _assigns(monkeypatch)

    consumer, summary = _run_until(settings, lambda: simulator.stats()["accepted"] >= len(keys))

    # one assignment, both partitions started at auto.offset.reset's offset, none held
    assert assigns == [[(topic, 0, OFFSET_BEGINNING), (topic, 1, OFFSET_BEGINNING)]]
    assert consumer._to_hold == []
    # each record fetched once: nothing read while a load was under way, then again
    assert _consumed(consumer) == len(events)
    stats = simulator.stats()
    assert stats["accepted"] == len(keys) and stats["duplicates"] == 0
    assert summary.delivered_total == len(keys)


def test_a_restart_starts_at_the_committed_offsets_and_sends_nothing_twice(
    kafka_bootstrap: str, simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = list(clickstream(60, seed=1702, invalid_ratio=0))
    first, later = events[:40], events[40:]
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_to(kafka_bootstrap, topic, 0, first)
    settings = settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url)
    first_keys = set(expected_signals(first))
    _run_until(settings, lambda: simulator.stats()["accepted"] >= len(first_keys))
    produce_to(kafka_bootstrap, topic, 0, later)
    assigns = _assigns(monkeypatch)

    all_keys = set(expected_signals(events))
    consumer, summary = _run_until(settings, lambda: simulator.stats()["accepted"] >= len(all_keys))

    assert assigns == [[(topic, 0, len(first))]]  # the committed offset, not OFFSET_INVALID
    assert OFFSET_INVALID not in {offset for call in assigns for _, _, offset in call}
    assert _consumed(consumer) == len(later)
    stats = simulator.stats()
    assert stats["accepted"] == len(all_keys) and stats["duplicates"] == 0
    assert summary.delivered_total == len(set(expected_signals(later)))
