"""A zombie replica: a newer instance with the same transactional id fences it.

The fenced one stops without committing (its process would exit non-zero and be
restarted) and leaves the group; the restarted replica re-reads what the zombie
delivered but never committed, and the ledger keeps it from being sent again.
"""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Producer
from devtools.clickstream import clickstream

from pipeline.kafka.consumer import RunSummary, SignalConsumer
from pipeline.kafka.ledger import duplicate_bound
from pipeline.kafka.runner import build_processor
from pipeline.kafka.transactions import TransactionFatal
from tests.integration.consumer_harness import (
    expected_signals,
    new_topics,
    produce,
    run_until_idle,
    settings_for,
    wait_for,
)
from tests.integration.ledger_harness import (  # noqa: F401  (fixtures)
    module_simulator_fixture,
    simulator_fixture,
)

pytestmark = pytest.mark.integration


def test_a_fenced_replica_stops_uncommitted_and_nothing_is_sent_twice(kafka_bootstrap, simulator):
    events = list(clickstream(600, seed=91, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, events)
    simulator.set_faults(latency_ms=100)
    settings = settings_for(
        kafka_bootstrap,
        topic,
        dlq,
        simulator.graphql_url,
        batch_max_signals=20,
        max_in_flight_batches=2,
        transactional_id=f"{topic}-replica",
        commit_interval_ms=60_000,  # nothing committed before the fence
        drain_timeout_s=3,
    )
    zombie = SignalConsumer(settings, build_processor(settings))
    outcome: list[RunSummary | BaseException] = []

    def run_zombie() -> None:
        try:
            outcome.append(zombie.run())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run_zombie, daemon=True)
    thread.start()
    wait_for(lambda: simulator.stats()["accepted"] >= 80, 60, "first deliveries")

    # A newer instance with the same transactional id: its init_transactions fences
    # the zombie's producer, whose next transactional step fails for good.
    newer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{topic}-replica"})
    newer.init_transactions(30)
    thread.join(60)
    assert not thread.is_alive(), "the fenced replica did not stop"
    (ended,) = outcome
    assert isinstance(ended, TransactionFatal), ended
    accepted_by_zombie = simulator.stats()["accepted"]
    assert accepted_by_zombie < len(events)

    restarted = run_until_idle(settings, idle_s=1.5)

    stats = simulator.stats()
    assert stats["unique_keys"] == len(expected_signals(events))  # nothing lost
    print(f"fenced: {stats['duplicates']} duplicates, bound {duplicate_bound(settings)}")
    # Only what the zombie had in flight when it was fenced can repeat.
    assert stats["duplicates"] <= duplicate_bound(settings, min_call_latency_s=0.1)
    # It re-read what the zombie delivered (never committed) and skipped it.
    assert restarted.skipped >= accepted_by_zombie - stats["duplicates"]
