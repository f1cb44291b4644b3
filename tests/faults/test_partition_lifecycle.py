"""Partition lifecycle: loss and duplicate paths of a consumer whose state outlives its
assignment (issue 13). Each with the embedded broker and a real HTTP server that holds
requests (a stuck batch) or answers as the case needs.

On the consumer before the partition-state rebuild (commit f50f9cb) the first test lost
records (offsets committed past a stuck batch), the second and third sent duplicates
beyond the stated window, the fourth re-sent the accepted half of a split batch.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from devtools.clickstream import clickstream

from pipeline.kafka.consumer import SignalConsumer
from pipeline.kafka.runner import build_processor
from tests.integration.connect_stub import ConnectStub, connect_stub
from tests.integration.consumer_harness import (
    BackgroundConsumer,
    expected_signals,
    new_topics,
    produce,
    read_topic,
    run_until_idle,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration


def _assigned(consumer: SignalConsumer) -> float:
    value = consumer.metrics.registry.get_sample_value("connect_signals_assigned_partitions")
    return value or 0.0


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in reader.committed(wanted, timeout=10)]
    finally:
        reader.close()


def _answer_held_with_503(connect: ConnectStub) -> None:
    """Abandoned requests still waiting in the server: answered 503, nothing recorded."""
    connect.outage.set()
    connect.let_go()
    connect.gate.set()
    wait_for(lambda: connect.held == 0, 15, "held requests answered")
    connect.outage.clear()


def _other_replica(settings: Any) -> Any:
    """The same group from another replica: its own transactional id (else it fences)."""
    return settings.model_copy(update={"transactional_id": f"{settings.group_id}-other"})


def _settings(bootstrap: str, topic: str, dlq: str, url: str, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "group_id": f"group-{uuid.uuid4().hex[:8]}",
        "drain_timeout_s": 0.5,
        "request_timeout_s": 2,
    }
    values.update(extra)
    return settings_for(bootstrap, topic, dlq, url, **values)


def _partition_of_keys(bootstrap: str, topic: str, count: int) -> dict[str, int]:
    """Idempotency key (the eventId) -> the partition its record is in."""
    from devtools.producer import EventEncoder  # noqa: F401  (the same encoder wrote them)

    from pipeline.kafka.runner import build_processor as processor_for

    records = read_topic(bootstrap, topic, count)
    processor = processor_for(settings_for(bootstrap, topic, "x", "http://x"))
    found: dict[str, int] = {}
    for message in records:
        outcome = processor.process(message.value())
        key = getattr(outcome, "idempotency_key", None)
        if key is not None:
            found[key] = message.partition()
    return found


class StuckPerPartition:
    """The first request with signals of a partition hangs (a stuck batch, one per
    partition); a later request carrying any of its signals gets 503; the rest pass."""

    def __init__(self, partition_of: dict[str, int]) -> None:
        self._partition_of = partition_of
        self._lock = threading.Lock()
        self.partitions: set[int] = set()
        self.stuck: set[str] = set()

    def __call__(self, keys: list[str], number: int) -> str:
        with self._lock:
            if self.stuck & set(keys):
                return "fail"
            parts = {self._partition_of[k] for k in keys}
            if parts - self.partitions:
                self.partitions |= parts
                self.stuck |= set(keys)
                return "hold"
            return "accept"


def test_revoked_while_stuck_then_given_back_loses_nothing(kafka_bootstrap):
    events = list(clickstream(80, seed=51, invalid_ratio=0, v1_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, events)
    expected = expected_signals(events)
    stuck = StuckPerPartition(_partition_of_keys(kafka_bootstrap, topic, len(events)))
    with connect_stub() as connect:
        connect.decide = stuck
        settings = _settings(
            kafka_bootstrap, topic, dlq, connect.url, batch_max_signals=10,
            request_timeout_s=60,
        )  # fmt: skip
        first = BackgroundConsumer(settings).start()
        wait_for(lambda: len(stuck.partitions) == 2, 30, "a batch stuck in each partition")
        wait_for(lambda: len(connect.accepted) == len(expected) - len(stuck.stuck), 30, "rest")
        second = BackgroundConsumer(_other_replica(settings)).start()
        wait_for(lambda: _assigned(second.consumer) == 1, 30, "one partition handed over")
        second.stop()  # ... and given back to the first, whose batch there is still stuck
        wait_for(lambda: _assigned(first.consumer) == 2, 30, "the partition back")
        wait_for(lambda: first.consumer.summary.consumed > len(events), 30, "read again")
        time.sleep(1.0)  # five commit intervals: room for a wrong commit to happen
        # stopped (drain times out, the stuck batches abandoned): the held requests
        # then fail, so nothing of them is recorded by Connect
        threading.Timer(1.0, _answer_held_with_503, (connect,)).start()
        first.stop()
        connect.decide = None
        run_until_idle(settings, idle_s=1.5)
    assert set(connect.accepted) == set(expected)  # the stuck batches' records too
    assert connect.duplicates == 0


def test_batches_of_a_revoked_partition_are_not_sent(kafka_bootstrap):
    events = list(clickstream(60, seed=52, invalid_ratio=0, v1_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, events)
    batch = 5
    with connect_stub() as connect:
        settings = _settings(
            kafka_bootstrap, topic, dlq, connect.url, batch_max_signals=batch,
            max_in_flight_batches=1, request_timeout_s=60,
        )  # fmt: skip
        connect.hold()  # one batch out (no timeout, no retry), the rest waiting here
        first = BackgroundConsumer(settings).start()
        wait_for(lambda: first.consumer.summary.consumed == len(events), 30, "all read")
        second = BackgroundConsumer(_other_replica(settings)).start()
        wait_for(lambda: _assigned(second.consumer) == 1, 30, "one partition handed over")
        connect.let_go()
        expected = expected_signals(events)
        wait_for(lambda: len(connect.accepted) == len(expected), 30, "all delivered")
        second.stop()
        first.stop()
    assert set(connect.accepted) == set(expected)
    # only the batch out at the revoke can repeat: the revoked partition's waiting
    # batches are never sent by the member that lost it
    assert connect.duplicates <= batch, connect.duplicates


def test_a_rewind_while_stale_batches_are_out_sends_nothing_twice(kafka_bootstrap):
    events = list(clickstream(40, seed=53, invalid_ratio=0, v1_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, events)
    with connect_stub() as connect:
        # the third batch is stuck while the others are accepted (their ledger records
        # make the transaction worth committing, and it aborts)
        connect.decide = lambda keys, n: "hold" if n == 3 else "accept"
        settings = _settings(
            kafka_bootstrap, topic, dlq, connect.url, batch_max_signals=5,
            max_in_flight_batches=3, request_timeout_s=60,
        )  # fmt: skip
        consumer = SignalConsumer(settings, build_processor(settings))
        transactions = consumer._txn
        assert transactions is not None
        commit = transactions.commit
        aborted = threading.Event()

        def abort_once(offsets: list[Any]) -> bool:
            if not aborted.is_set() and connect.held >= 1:  # a batch out, stuck
                aborted.set()
                transactions.abort("injected by the test")
                return False
            return commit(offsets)

        transactions.commit = abort_once  # type: ignore[method-assign]
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        wait_for(aborted.is_set, 30, "an abort with a batch out")
        wait_for(lambda: consumer.summary.consumed >= len(events) + 5, 30, "read again")
        connect.gate.set()  # the stale batches come back accepted
        expected = expected_signals(events)
        wait_for(lambda: len(connect.accepted) == len(expected), 30, "all delivered")
        consumer.stop()
        thread.join(30)
    assert set(connect.accepted) == set(expected)
    assert connect.duplicates == 0


def test_the_accepted_half_of_an_abandoned_split_batch_is_not_sent_again(kafka_bootstrap):
    events = list(clickstream(8, seed=54, invalid_ratio=0, v1_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, events)
    with connect_stub() as connect:
        # the batch of 4 is refused naming no signal: the client sends halves; the
        # first half is accepted, the second stuck until the consumer is stopped
        connect.decide = lambda keys, n: {1: "reject", 2: "accept"}.get(n, "hold")
        settings = _settings(
            kafka_bootstrap, topic, dlq, connect.url, batch_max_signals=4,
            max_in_flight_batches=1,
        )  # fmt: skip
        first = BackgroundConsumer(settings).start()
        wait_for(lambda: connect.held >= 1, 30, "the second half stuck")
        accepted_half = list(connect.accepted)
        assert len(accepted_half) == 2
        first.stop()  # the batch is abandoned half done
        _answer_held_with_503(connect)
        connect.decide = None
        run_until_idle(settings, idle_s=1.5)
    assert set(connect.accepted) == set(expected_signals(events))
    assert connect.duplicates == 0


def test_a_slow_commit_does_not_widen_the_duplicate_window(kafka_bootstrap):
    """With transactions, a crash during a commit can repeat only what Connect accepted
    without a ledger record yet. The loop dispatches nothing while it commits, so that
    is at most the batches out when the commit began, however long it takes."""
    events = list(clickstream(400, seed=55, invalid_ratio=0, v1_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, events)
    batch, in_flight = 10, 4
    with connect_stub() as connect:
        settings = _settings(
            kafka_bootstrap, topic, dlq, connect.url, batch_max_signals=batch,
            max_in_flight_batches=in_flight,
        )  # fmt: skip
        consumer = SignalConsumer(settings, build_processor(settings))
        transactions = consumer._txn
        assert transactions is not None
        commit = transactions.commit
        unrecorded: list[int] = []

        def slow_commit(offsets: list[Any]) -> bool:
            time.sleep(0.5)  # a slow broker; calls take ~1 ms here: 500 rounds could pass
            # a crash now: accepted by Connect, not in the ledger (not even produced)
            unrecorded.append(sum(1 for key in connect.accepted if key not in consumer.ledger))
            return commit(offsets)

        transactions.commit = slow_commit  # type: ignore[method-assign]
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        expected = expected_signals(events)
        wait_for(lambda: len(connect.accepted) == len(expected), 60, "all delivered")
        consumer.stop()
        thread.join(30)
    assert len(unrecorded) >= 2  # commits happened while batches were out
    assert max(unrecorded) <= batch * in_flight, unrecorded
    assert connect.duplicates == 0
