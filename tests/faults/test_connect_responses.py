"""Connect answers the pipeline cannot take at face value (issue 12, rows 1, 2 and 8).

One embedded broker, one plain HTTP server playing Connect (tests/faults/
connect_answers_support.py) and one consumer in this process for the whole module;
each case scripts the server's next calls with one fault shape, produces fresh events
and waits until every one of them is accepted and the group's committed offsets reach
the end of the topic. Then: each valid event accepted exactly once, nothing
dead-lettered, the consumer thread alive. One case runs ``connect-pipeline run`` as a
process through every unreadable shape in a row.
"""

from __future__ import annotations

import itertools
import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, TopicPartition
from devtools.clickstream import clickstream

from tests.faults.connect_answers_support import Answer, FaultyConnect, faulty_connect
from tests.integration.consumer_harness import (
    API_KEY,
    BackgroundConsumer,
    consumer_process,
    expected_signals,
    new_topics,
    produce,
    read_topic,
    settings_for,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
EVENTS_PER_CASE = 30
#: How many calls in a row meet the fault before Connect answers normally.
K = 3
WAIT_S = 30.0


def coded(code: str) -> Answer:
    error = {"message": f"{code.lower()} happened", "extensions": {"code": code}}
    return Answer(200, json.dumps({"data": None, "errors": [error]}).encode())


#: Every shape a 200 (or a proxy) can take that says nothing about the signals.
UNREADABLE = {
    "empty 200": Answer(200, b""),
    "data null": Answer(200, b'{"data":null}'),
    "html 200": Answer(200, b"<html><body>Welcome</body></html>", "text/html"),
    "errors 5": Answer(200, b'{"data":null,"errors":5}'),
    "extensions x": Answer(200, b'{"data":null,"errors":[{"message":"m","extensions":"x"}]}'),
    "errors [null]": Answer(200, b'{"data":null,"errors":[null]}'),
    "json array": Answer(200, b'[{"data":null,"errors":[]}]'),
    "invalid utf-8": Answer(200, b'{"data":{"createSignals":{"signalIds":["\xff\xfe"]}}}'),
    "truncated json": Answer(200, b'{"data":{"createSignals":{"signalIds":["id-'),
    "proxy 407": Answer(407, b"<html><h1>Proxy Authentication Required</h1></html>", "text/html"),
}
TRANSIENT_CODES = [
    "THROTTLED",
    "RATE_LIMITED",
    "INTERNAL_SERVER_ERROR",
    "SERVICE_UNAVAILABLE",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "SOMETHING_NEW",
]
CASES = {
    **UNREADABLE,
    **{code: coded(code) for code in TRANSIENT_CODES},
    "504": Answer(504, b"<html>504 Gateway Time-out</html>", "text/html"),
    "accepted half + THROTTLED": Answer(200, b"", accept_half=True),
    "trickled answer": Answer(200, b"", wire="trickle"),
    "endless body": Answer(200, b"", wire="endless"),
}
_seeds = itertools.count(1_000)


@dataclass
class Pipeline:
    connect: FaultyConnect
    consumer: BackgroundConsumer
    bootstrap: str
    topic: str
    group: str
    reader: Consumer
    produced: int = 0

    def committed(self) -> int:
        partitions = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        offsets = self.reader.committed(partitions, timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)

    def run_case(self, script: list[Answer], events: int = EVENTS_PER_CASE) -> set[str]:
        """Script the server, produce fresh events, wait until all are through."""
        batch = list(clickstream(events, seed=next(_seeds), invalid_ratio=0))
        expected = set(expected_signals(batch))
        assert len(expected) == events and not expected & set(self.connect.accepted)
        self.connect.script(*script)
        self.produced += produce(self.bootstrap, self.topic, batch)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if expected <= set(self.connect.accepted) and self.committed() == self.produced:
                break
            time.sleep(0.1)
        assert expected <= set(self.connect.accepted), "not every event was accepted"
        assert self.committed() == self.produced, "the offsets stopped short of the end"
        return expected


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str) -> Iterator[Pipeline]:
    topic, dlq = new_topics(kafka_bootstrap, partitions=PARTITIONS)
    with faulty_connect() as connect:
        settings = settings_for(
            kafka_bootstrap, topic, dlq, connect.url, retry_max_backoff_ms=200, request_timeout_s=2
        )
        reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": settings.group_id})
        consumer = BackgroundConsumer(settings).start()
        try:
            yield Pipeline(connect, consumer, kafka_bootstrap, topic, settings.group_id, reader)
        finally:
            consumer.stop()
            reader.close()


@pytest.mark.parametrize("shape", list(CASES))
def test_a_fault_shape_for_k_calls_costs_retries_only(pipeline: Pipeline, shape: str) -> None:
    connect = pipeline.connect
    dead_before = pipeline.consumer.consumer.summary.dead_lettered_total

    expected = pipeline.run_case([CASES[shape]] * K)

    assert connect.scripted_served == K  # the fault was really met, K times
    assert all(connect.accepted[key] == 1 for key in expected)  # exactly once
    assert connect.duplicates == 0
    assert pipeline.consumer.consumer.summary.dead_lettered_total == dead_before == 0
    assert pipeline.consumer.thread.is_alive()
    assert connect.api_keys == {API_KEY}  # X-API-Key, the bare key (issue 15)


def test_a_batch_that_keeps_getting_504_is_split_never_dead_lettered(pipeline: Pipeline) -> None:
    connect = pipeline.connect
    connect.slow_over, connect.largest_accepted_call = 4, 0
    try:
        expected = pipeline.run_case([], events=40)
    finally:
        connect.slow_over = 0
    assert connect.slow_served >= 3  # the large calls did fail
    assert all(connect.accepted[key] == 1 for key in expected)
    assert connect.largest_accepted_call <= 4 < 40
    assert pipeline.consumer.consumer.summary.dead_lettered_total == 0
    assert pipeline.consumer.thread.is_alive()


def test_connect_pipeline_run_survives_every_unreadable_answer_in_a_row(
    kafka_bootstrap: str, tmp_path
) -> None:
    events = list(clickstream(60, seed=77, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, events)
    expected = set(expected_signals(events))
    group = f"group-{uuid.uuid4().hex[:8]}"
    with faulty_connect() as connect:
        connect.script(*UNREADABLE.values())  # one of each, then normal answers
        settings = settings_for(
            kafka_bootstrap, topic, dlq, connect.url, group_id=group, retry_max_backoff_ms=200
        )
        process = consumer_process(settings, tmp_path / "run.log")
        reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
        try:
            deadline = time.monotonic() + 60
            committed = -1
            while time.monotonic() < deadline and process.poll() is None:
                (tp,) = reader.committed([TopicPartition(topic, 0)], timeout=10)
                committed = tp.offset
                if committed == len(events) and expected <= set(connect.accepted):
                    break
                time.sleep(0.2)
            alive = process.poll() is None
            process.send_signal(signal.SIGTERM)
            code = process.wait(30)
        finally:
            reader.close()
            if process.poll() is None:
                process.kill()
    log = (tmp_path / "run.log").read_text()
    assert alive, log[-3000:]
    assert code == 0, log[-3000:]
    assert connect.script_left == 0 and connect.scripted_served == len(UNREADABLE)
    assert committed == len(events)
    assert set(connect.accepted) == expected and connect.duplicates == 0
    assert read_topic(kafka_bootstrap, dlq, 0, timeout_s=2) == []
