"""The session changelog on a real broker: written in a transaction, read back on
assign into the same sessions; tombstones forget closed sessions."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from pipeline.kafka.session_changelog import ensure_changelog_topic, read_changelog
from pipeline.sessions.store import SessionStore
from tests.unit.sessions.script import GAP_S, GRACE_S, add, feed, options, view

pytestmark = pytest.mark.integration


def test_sessions_survive_the_round_trip_through_the_topic(kafka_bootstrap: str) -> None:
    conf = {"bootstrap.servers": kafka_bootstrap}
    topic = f"sessions-{uuid.uuid4().hex[:8]}"
    assert ensure_changelog_topic(conf, topic, 2) == 2
    assert ensure_changelog_topic(conf, topic, 5) == 2  # exists: left as it is
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = AdminClient(conf)
    (future,) = admin.describe_configs([resource]).values()
    assert future.result(30)["cleanup.policy"].value == "compact"

    store = SessionStore("clicks", options())
    feed(store, [add("s1", 0, "A", 2), view("s2", 0, "B"), add("s3", 0, "C")])
    closing = feed(store, [view("s4", GAP_S + GRACE_S, "D")], first_offset=3)
    assert len(closing) == 3
    for derived in closing[:2]:
        store.settled(derived.key, derived.kind)
    producer = Producer({**conf, "transactional.id": f"t-{topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for key, value in store.take_changes():
        producer.produce(topic, key=key, value=value, partition=1)
    producer.commit_transaction(30)
    store.committed()

    read = read_changelog(conf, topic, [0, 1])
    assert read[0] == []
    records = read[1]
    restored = SessionStore.restore("clicks", options(), records)
    assert restored.open_count == store.open_count == 1
    assert restored.applied_offset == 3
    assert [(d.key, d.kind) for d in restored.pending()] == [(closing[2].key, closing[2].kind)]
