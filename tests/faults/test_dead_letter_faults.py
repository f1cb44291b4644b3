"""The dead-letter topic cannot be written, or a dead letter is too large: never a loss,
never a crash loop.

- an invalid PIPELINE_DLQ_TOPIC: ``connect-pipeline run`` exits non-zero at start,
  naming the topic and the cause, having read nothing;
- a topic that refuses records at run time: the consumer stops uncommitted (offsets
  never past the first poison pill), and a restart with a good topic dead-letters
  exactly the invalid events. The embedded Tansu broker auto-creates deleted topics and
  enforces no ACLs; what it does refuse is a record that fails the JSON schema it
  validates a topic against (``--schema-registry``), so that topic stands in for one
  deleted with auto-creation off or one whose ACL was revoked;
- a dead letter still too large without its value (a huge key): written without the
  oversized parts, saying so in headers, the partition moves on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from devtools.clickstream import clickstream
from devtools.stack import create_topics

from pipeline.kafka.consumer import SignalConsumer
from pipeline.kafka.dead_letters import (
    KEY_OMITTED_HEADER,
    VALUE_OMITTED_HEADER,
    DeadLetterUnwritable,
    header_value,
)
from pipeline.kafka.ledger import duplicate_bound
from pipeline.kafka.runner import build_processor
from tests.faults.strict_topics import committed, strict_broker
from tests.integration.connect_stub import connect_stub
from tests.integration.consumer_harness import (
    consumer_process,
    expected_signals,
    new_topics,
    produce,
    read_topic,
    run_until_idle,
    settings_for,
)

pytestmark = pytest.mark.integration

STRICT_DLQ = "strict-dlq"


@pytest.fixture(scope="module")
def strict_dlq_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker of its own that refuses every record written to STRICT_DLQ."""
    with strict_broker(tmp_path_factory.mktemp("tansu-strict"), (STRICT_DLQ,)) as bootstrap:
        yield bootstrap


def test_an_invalid_dead_letter_topic_stops_run_at_start(kafka_bootstrap, tmp_path):
    topic, _ = new_topics(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, clickstream(20, seed=5, invalid_ratio=0.2))
    with connect_stub() as connect:
        settings = settings_for(kafka_bootstrap, topic, "not a topic!", connect.url)
        log_path = tmp_path / "run.log"
        process = consumer_process(settings, log_path)
        try:
            code = process.wait(60)
        finally:
            process.kill()
        assert connect.requests == 0  # nothing read, nothing sent
    output = log_path.read_text()
    assert code != 0
    assert "dead-letter topic 'not a topic!' cannot be written" in output
    assert "Invalid topic" in output or "TOPIC_EXCEPTION" in output
    assert committed(kafka_bootstrap, settings.group_id, topic) < 0


def test_a_refused_dead_letter_stops_uncommitted_and_a_restart_delivers_exactly(strict_dlq_broker):
    """With transactions (the default); the plain path's refusal is the same raise, from
    the acknowledgement (tests/unit/kafka/test_dead_letter_writer.py)."""
    bootstrap = strict_dlq_broker
    events = list(clickstream(120, seed=21, invalid_ratio=0.1, v1_ratio=0))
    invalid_at = [i for i, e in enumerate(events) if e.invalid]
    assert invalid_at
    topic, good_dlq = new_topics(bootstrap, partitions=1)
    create_topics(bootstrap, {STRICT_DLQ: 1})  # or the other parametrisation made it
    produce(bootstrap, topic, events)
    group = f"group-{uuid.uuid4().hex[:8]}"
    with connect_stub() as connect:
        settings = settings_for(bootstrap, topic, STRICT_DLQ, connect.url, group_id=group)
        consumer = SignalConsumer(settings, build_processor(settings))
        with pytest.raises(DeadLetterUnwritable, match=f"'{STRICT_DLQ}' refused a record"):
            consumer.run(stop_after_idle_s=5)
        assert committed(bootstrap, group, topic) <= invalid_at[0]  # never past a pill

        again = settings.model_copy(update={"dlq_topic": good_dlq})
        summary = run_until_idle(again, idle_s=2.0)
        expected = expected_signals(events)
        assert set(connect.accepted) == set(expected)
        # what was out when it stopped (stopping uncommitted, like a crash) may come
        # again: the duplicate window (in a transaction its ledger records die with it)
        assert connect.duplicates <= duplicate_bound(settings)
    assert summary.dead_lettered_total == len(invalid_at)
    dead = read_topic(bootstrap, good_dlq, len(invalid_at))
    offsets = sorted(int(header_value(m.headers(), "__connect.errors.offset")) for m in dead)
    assert offsets == invalid_at  # exactly the invalid events, once each
    assert committed(bootstrap, group, topic) == len(events)


def test_a_dead_letter_with_a_huge_key_goes_without_it_and_the_partition_moves_on(
    kafka_bootstrap,
):
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 5_000_000})
    huge_key = b"K" * 1_200_000  # over the dead-letter producer's message.max.bytes
    producer.produce(topic, key=huge_key, value=b"\x07garbage", headers=[("small", b"s")])
    producer.produce(topic, key=b"k", value=b"\x07garbage2", headers=[("big", b"x" * 1_100_000)])
    assert producer.flush(30) == 0
    with connect_stub() as connect:
        settings = settings_for(kafka_bootstrap, topic, dlq, connect.url)
        summary = run_until_idle(settings, idle_s=2.0)
    assert summary.dead_lettered_total == 2
    first, second = sorted(read_topic(kafka_bootstrap, dlq, 2), key=lambda m: m.offset())
    assert first.key() is None and first.value() is None
    assert header_value(first.headers(), KEY_OMITTED_HEADER) == str(len(huge_key))
    assert header_value(first.headers(), VALUE_OMITTED_HEADER) == "8"
    assert header_value(first.headers(), "small") == "s"
    assert header_value(first.headers(), "connect.signals.reason") == "undecodable"
    assert header_value(second.headers(), "big") is None
    assert header_value(second.headers(), "connect.signals.headers.omitted") == (
        "1 of 1 omitted (too large to dead-letter)"
    )
    assert committed(kafka_bootstrap, settings.group_id, topic) == 2
