"""The delivery ledger end to end: replays and redrives never re-send what Connect has.

Real broker, the simulator over HTTP with its server-side idempotency OFF, so any
signal the pipeline sends twice shows up in its duplicate count.
"""

from __future__ import annotations

from collections import Counter

import pytest
from devtools.clickstream import clickstream

from pipeline.kafka.dead_letters import header_value
from pipeline.kafka.redrive import run_redrive
from pipeline.signals.catalog import Tier
from tests.integration.consumer_harness import (
    expected_signals,
    new_topics,
    read_topic,
    run_until_idle,
    settings_for,
)
from tests.integration.ledger_harness import (  # noqa: F401  (fixtures)
    module_simulator_fixture,
    produce_sealed,
    replay_all,
    replay_command,
    simulator_fixture,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transactions", [True, False], ids=["transactional", "acked-writes"])
def test_replay_of_a_delivered_range_sends_nothing_and_reports_all_skipped(
    kafka_bootstrap, simulator, transactions
):
    events = list(clickstream(300, seed=61, invalid_ratio=0.05))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_sealed(kafka_bootstrap, topic, events)
    settings = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, transactions=transactions
    )
    live = run_until_idle(settings, idle_s=1.5)
    expected = expected_signals(events)
    invalid = len(events) - len(expected)
    assert live.delivered_total == len(expected) and invalid > 0
    accepted_before = simulator.stats()["accepted"]

    summary = replay_all(settings, topic)

    assert summary.consumed == len(events)
    assert summary.delivered_total == 0
    assert summary.skipped == len(expected)
    assert summary.dead_lettered_total == invalid  # never accepted: they still fail
    stats = simulator.stats()
    assert stats["accepted"] == accepted_before and stats["duplicates"] == 0

    if transactions:  # the command, as a Kubernetes Job runs it, by timestamp
        # Newer events the live group has not consumed yet are left to it: the replay
        # stops at the live group's committed offset.
        produce_sealed(kafka_bootstrap, topic, list(clickstream(40, seed=64, invalid_ratio=0)))
        report = replay_command(
            settings, f"--topic={topic}", "--from=2020-01-01T00:00:00Z", "--no-progress"
        )
        assert report["read"] == len(events)
        assert report["sent"] == 0 and report["skipped_already_delivered"] == len(expected)
        assert report["dead_lettered"] == invalid
        assert simulator.stats()["accepted"] == accepted_before
        # --to before the first record: the captured end is the start, nothing is read
        report = replay_command(
            settings,
            f"--topic={topic}",
            "--from=2020-01-01T00:00:00+00:00",
            "--to=2020-01-02T00:00:00+00:00",
            "--no-progress",
        )
        assert report["read"] == 0 and report["sent"] == 0


def test_redrive_after_a_tier_upgrade_sends_only_what_was_rejected(kafka_bootstrap, simulator):
    events = list(clickstream(300, seed=62, invalid_ratio=0.05))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_sealed(kafka_bootstrap, topic, events)
    pro = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, subscription_tier=Tier.PRO
    )
    first = run_until_idle(pro, idle_s=1.5)
    out_of_tier = first.dead_lettered["subscription"]
    invalid = first.dead_lettered["validation"]
    assert out_of_tier > 0 and invalid > 0
    delivered_first = first.delivered_total
    dead = read_topic(kafka_bootstrap, dlq, out_of_tier + invalid)
    assert len(dead) == out_of_tier + invalid

    # The fix: the subscription now covers every type. Only subscription rejections
    # are redriven; those that are also invalid fail again, now for validation.
    ultimate = pro.model_copy(update={"subscription_tier": Tier.ULTIMATE})
    redriven = run_redrive(ultimate, ["subscription"])
    valid_total = len(expected_signals(events))
    still_invalid = out_of_tier - (valid_total - delivered_first)
    assert redriven.delivered_total == valid_total - delivered_first
    assert redriven.dead_lettered == ({"validation": still_invalid} if still_invalid else {})
    assert redriven.filtered == invalid and redriven.skipped == 0
    stats = simulator.stats()
    assert stats["accepted"] == valid_total and stats["duplicates"] == 0

    # Each record is redriven once per group. A full redrive (its own group) reads
    # every record: what the first redrive delivered is skipped (the ledger), the
    # rest goes back again, attempt + 1, with the original source in its headers.
    again = run_redrive(ultimate)
    assert again.consumed == len(dead) + still_invalid
    assert again.delivered_total == 0
    assert again.skipped == valid_total - delivered_first
    assert again.dead_lettered == {"validation": invalid + 2 * still_invalid}
    rerun = run_redrive(ultimate, ["subscription"])  # only newer records, none for it
    assert rerun.filtered == rerun.consumed == invalid + 3 * still_invalid
    total = len(dead) + still_invalid + invalid + 2 * still_invalid
    everything = read_topic(kafka_bootstrap, dlq, total)
    assert len(everything) == total
    back = everything[len(dead) + still_invalid :]
    attempts = Counter(header_value(r.headers(), "connect.signals.attempt") for r in back)
    assert attempts == Counter({"2": invalid + still_invalid, "3": still_invalid})
    originals = {m.value(): m for m in dead}
    for record in back:
        headers, original = record.headers(), originals[record.value()].headers()
        assert header_value(headers, "connect.signals.reason") == "validation"
        for name in ("topic", "partition", "offset"):
            header = f"__connect.errors.{name}"
            assert header_value(headers, header) == header_value(original, header)
        assert header_value(headers, "__connect.errors.topic") == topic
    assert simulator.stats()["duplicates"] == 0


def test_replay_after_a_tier_upgrade_sends_only_what_was_rejected(kafka_bootstrap, simulator):
    events = list(clickstream(250, seed=63, invalid_ratio=0))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_sealed(kafka_bootstrap, topic, events)
    pro = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, subscription_tier=Tier.PRO
    )
    first = run_until_idle(pro, idle_s=1.5)
    out_of_tier = first.dead_lettered["subscription"]
    assert out_of_tier > 0

    ultimate = pro.model_copy(update={"subscription_tier": Tier.ULTIMATE})
    summary = replay_all(ultimate, topic)

    assert summary.delivered_total == out_of_tier
    assert summary.skipped == first.delivered_total
    stats = simulator.stats()
    assert stats["accepted"] == len(events) and stats["duplicates"] == 0
    assert {row["key"] for row in simulator.signals()} == set(expected_signals(events))
