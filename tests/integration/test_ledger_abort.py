"""An aborted transaction: the consumer rewinds to the committed offsets, re-reads,
and the ledger keeps what Connect accepted meanwhile from being sent again.

The abort is real (the producer's ``abort_transaction`` on the real broker); only its
moment is chosen, by making one commit cycle abort instead of committing.
"""

from __future__ import annotations

import threading

import pytest
from devtools.clickstream import clickstream
from devtools.stack import external_bootstrap

from pipeline.kafka.consumer import SignalConsumer
from pipeline.kafka.dead_letters import header_value
from pipeline.kafka.runner import build_processor
from tests.integration.consumer_harness import (
    expected_signals,
    new_topics,
    read_topic,
    settings_for,
)
from tests.integration.ledger_harness import (  # noqa: F401  (fixtures)
    module_simulator_fixture,
    produce_sealed,
    replay_all,
    simulator_fixture,
)

pytestmark = pytest.mark.integration


def test_an_aborted_transaction_rewinds_and_sends_nothing_twice(kafka_bootstrap, simulator):
    events = list(clickstream(600, seed=81, invalid_ratio=0.05))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_sealed(kafka_bootstrap, topic, events)
    simulator.set_faults(latency_ms=10)
    settings = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, batch_max_signals=20
    )
    consumer = SignalConsumer(settings, build_processor(settings))
    transactions = consumer._txn
    assert transactions is not None
    commit = transactions.commit
    aborted = threading.Event()

    def abort_one(offsets):
        # The first cycle that carries ledger records and offsets aborts instead.
        if not aborted.is_set() and offsets and consumer.summary.delivered_total >= 100:
            aborted.set()
            transactions.abort("injected by the test")
            return False
        return commit(offsets)

    transactions.commit = abort_one  # type: ignore[method-assign]
    summary = consumer.run(stop_after_idle_s=1.5)

    assert aborted.is_set() and transactions.aborts == 1
    expected = expected_signals(events)
    stats = simulator.stats()
    assert stats["duplicates"] == 0
    assert stats["accepted"] == len(expected) == summary.delivered_total
    assert summary.skipped > 0  # re-read after the rewind, already accepted
    invalid = len(events) - len(expected)
    dead = read_topic(kafka_bootstrap, dlq, invalid)
    offsets = {header_value(m.headers(), "__connect.errors.offset") for m in dead}
    assert len(offsets) == invalid  # every invalid event dead-lettered
    if external_bootstrap():  # Tansu shows aborted records too
        assert len(dead) == invalid

    # The ledger records rewritten after the abort were committed: a replay sends 0.
    # The whole range (Tansu does not apply the offsets of a transaction that wrote no
    # record, so after the skipped re-reads the live group's offset may lag there).
    replay = replay_all(settings, topic, behind_live=False)
    assert replay.delivered_total == 0 and replay.skipped == len(expected)
    assert simulator.stats()["duplicates"] == 0
