"""Flow control with a stand-in consumer: pause, resume, newly assigned, holds."""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition

from pipeline.kafka.flow import FlowControl
from tests.unit.kafka.fakes import FakeConsumer


def _flow(assigned):
    consumer = FakeConsumer()
    flow = FlowControl(
        consumer, 1_000, lambda: list(assigned), initial_backoff_ms=10, max_backoff_ms=40
    )  # type: ignore[arg-type]
    return flow, consumer


def test_pauses_over_the_bound_or_when_the_api_fails_and_resumes_under_half():
    assigned = [("t", 0), ("t", 1)]
    flow, consumer = _flow(assigned)
    flow.apply(1_001, api_failing=False)
    assert flow.paused and sorted(consumer.paused) == assigned
    flow.apply(600, api_failing=False)
    assert flow.paused  # between half and the bound: stays
    flow.apply(400, api_failing=True)
    assert flow.paused
    flow.apply(400, api_failing=False)
    assert not flow.paused and sorted(consumer.resumed) == assigned


def test_partitions_assigned_while_paused_are_paused_on_the_next_turn():
    assigned = [("t", 0)]
    flow, consumer = _flow(assigned)
    flow.apply(2_000, api_failing=False)
    assigned.append(("t", 1))
    flow.newly_assigned([TopicPartition("t", 1)])
    assert ("t", 1) not in consumer.paused  # not in the callback: it has no effect there
    flow.after_poll()
    assert ("t", 1) in consumer.paused


def test_a_hold_seeks_back_pauses_and_releases_with_backoff():
    assigned = [("t", 0)]
    flow, consumer = _flow(assigned)
    flow.hold(("t", 0), 42, RuntimeError("registry down"))
    assert consumer.seeks == [("t", 0, 42)] and consumer.paused == [("t", 0)]
    assert flow.paused_count() == 1
    flow.apply(0, api_failing=False)
    assert ("t", 0) in flow.held  # not yet due
    time.sleep(0.02)
    flow.apply(0, api_failing=False)
    assert not flow.held and consumer.resumed == [("t", 0)]
    flow.hold(("t", 0), 42, RuntimeError("again"))
    assert flow.held[("t", 0)] - time.monotonic() > 0.012  # the backoff doubled
    flow.served(("t", 0))
    flow.forget({("t", 0)})
    assert not flow.held
