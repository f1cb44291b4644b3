"""Issue 14: the ledger at volume, scaled down. A restart reads the tail its committed
offset can re-read, not the ledger; a replay of an old range holds that range only.

Real broker; the simulator over HTTP with its server-side idempotency OFF, so every
signal sent twice is counted. Ledger history is written directly (fast), as a live
writer leaves it.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from devtools.clickstream import clickstream

from pipeline.kafka.consumer import Bounds, SignalConsumer
from pipeline.kafka.ledger import encode, ensure_ledger_topic, topic_id
from pipeline.kafka.ledger_loader import FIRST_CHUNK
from pipeline.kafka.replay import bounded_settings
from pipeline.kafka.runner import build_processor
from pipeline.signals.catalog import Tier
from tests.integration.consumer_harness import (
    expected_signals,
    new_topics,
    run_until_idle,
    settings_for,
)
from tests.integration.ledger_harness import (  # noqa: F401  (fixtures)
    live_writes,
    module_simulator_fixture,
    produce_sealed,
    simulator_fixture,
    write_ledger,
)

pytestmark = pytest.mark.integration

HISTORY = 150_000  # ledger records below the committed offset: a week, scaled down
WEEK_MS = 7 * 24 * 3_600_000


def test_a_restart_with_a_large_ledger_reads_its_tail_and_skips_what_was_delivered(
    kafka_bootstrap, simulator
):
    events = list(clickstream(300, seed=141, invalid_ratio=0))
    keys = list(expected_signals(events))
    assert len(keys) == len(events)
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_sealed(kafka_bootstrap, topic, events)
    settings = settings_for(kafka_bootstrap, topic, dlq, simulator.graphql_url)
    ensure_ledger_topic(
        {"bootstrap.servers": kafka_bootstrap}, settings.ledger_topic_name, 1, WEEK_MS
    )
    committed = 200
    now = int(time.time() * 1000)
    # A week of history below the committed offset, then what a crashed predecessor
    # delivered past it (events 200-249) before it could commit.
    history = live_writes(topic, 0, (n * committed // HISTORY for n in range(HISTORY)), now)
    crashed = [
        (keys[offset], encode(now, topic_id(topic), 0, offset, offset + 1))
        for offset in range(committed, committed + 50)
    ]
    write_ledger(kafka_bootstrap, settings.ledger_topic_name, [*history, *crashed])
    group = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": settings.group_id})
    group.commit(offsets=[TopicPartition(topic, 0, committed)], asynchronous=False)
    group.close()

    consumer = SignalConsumer(settings, build_processor(settings))
    summary = consumer.run(stop_after_idle_s=1.5)

    read = consumer.metrics.registry.get_sample_value("connect_signals_ledger_records_read")
    # the source was read at once: one chunk from the ledger's end, not 150,050 records
    assert read is not None and 0 < read <= FIRST_CHUNK + HISTORY // 10, read
    assert summary.consumed == 100
    assert summary.skipped == 50 and summary.delivered_total == 50
    stats = simulator.stats()
    assert stats["accepted"] == 50 and stats["duplicates"] == 0
    assert {row["key"] for row in simulator.signals()} == set(keys[committed + 50 :])


def test_a_replay_of_an_old_range_skips_exactly_the_accepted_keys_and_holds_only_them(
    kafka_bootstrap, simulator
):
    events = list(clickstream(900, seed=142, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_sealed(kafka_bootstrap, topic, events)
    pro = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, subscription_tier=Tier.PRO
    )
    first = run_until_idle(pro, idle_s=1.5)  # the live consumer: PRO types only
    assert first.dead_lettered["subscription"] > 0
    accepted = {row["key"] for row in simulator.signals()}
    keys = list(expected_signals(events))  # in offset order (every event is valid)

    # The fix (ULTIMATE covers every type), replayed over an old range only.
    ultimate = pro.model_copy(update={"subscription_tier": Tier.ULTIMATE})
    replaying = bounded_settings(ultimate, f"{ultimate.group_id}-replay", [topic])
    start, end = 200, 500
    bounds = Bounds({(topic, 0): start}, {(topic, 0): end})
    consumer = SignalConsumer(replaying, build_processor(replaying), bounds=bounds)
    summary = consumer.run()

    in_range = keys[start:end]
    already = [k for k in in_range if k in accepted]
    assert summary.consumed == end - start
    assert summary.skipped == len(already)
    assert summary.delivered_total == len(in_range) - len(already) > 0
    # it held the range's accepted keys (and what it accepted), not the 900 before
    assert len(consumer.ledger) == len(in_range)
    stats = simulator.stats()
    assert stats["duplicates"] == 0
    assert {row["key"] for row in simulator.signals()} == accepted | set(in_range)
