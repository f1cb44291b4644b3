"""Issue 14: a replay joins the ledger window by window, in bounded memory.

Real broker; the simulator over HTTP with its server-side idempotency OFF, so every
signal sent twice is counted. Ledger history is written directly (fast): live writers'
records (format 2 and 3, horizons rising), a backfill's (no horizon, out of source
order), a second writer's after a rebalance, format-1 records from before the upgrade.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
from devtools.clickstream import clickstream

from pipeline.kafka.ledger import ensure_ledger_topic, key_digest
from pipeline.kafka.ledger_records import (
    batch_key,
    encode,
    encode_batch,
    encode_v1,
    topic_id,
)
from pipeline.kafka.records import Bounds
from pipeline.kafka.redrive import (
    DeadLetterOrigin,
    dead_letter_keys,
    redrive_bounds,
    redrive_group,
    redrive_ledger,
    run_redrive,
)
from pipeline.kafka.replay import bounded_settings, run_joined
from pipeline.kafka.runner import build_processor
from pipeline.signals.catalog import Tier, types_in_tier
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
    replay_command,
    simulator_fixture,
    write_ledger,
)

pytestmark = pytest.mark.integration

WEEK_MS = 7 * 24 * 3_600_000
START, END = 200, 500  # the replayed range


def _replay(settings, topic: str, window: int):  # type: ignore[no-untyped-def]
    replaying = bounded_settings(settings, f"{settings.group_id}-replay", [topic])
    bounds = Bounds({(topic, 0): START}, {(topic, 0): END})
    return run_joined(replaying, bounds, build_processor(replaying), window)


def _prepare(bootstrap: str, simulator, events: int, seed: int):  # type: ignore[no-untyped-def]
    generated = list(clickstream(events, seed=seed, invalid_ratio=0))
    keys = list(expected_signals(generated))
    assert len(keys) == len(generated)
    topic, dlq = new_topics(bootstrap, partitions=1)
    produce_sealed(bootstrap, topic, generated)
    settings = settings_for(bootstrap, topic, dlq, simulator.graphql_url)
    ensure_ledger_topic({"bootstrap.servers": bootstrap}, settings.ledger_topic_name, 1, WEEK_MS)
    return topic, keys, settings


def test_a_replay_of_an_old_range_skips_exactly_what_the_ledger_holds_in_a_window_bound(
    kafka_bootstrap, simulator
):
    topic, keys, settings = _prepare(kafka_bootstrap, simulator, 700, seed=143)
    now = int(time.time() * 1000)
    tid = topic_id(topic)
    accepted = {o for o in range(START, END) if o % 3 != 0}  # two thirds were accepted
    # History: another source's, the offsets before the range, then the range
    # interleaved with many more records of another source (40 outside the range for
    # each one inside), then what a live writer accepted past the range.
    outside = iter(live_writes("elsewhere", 0, range(10**6), now))
    history = [next(outside) for _ in range(30_000)]
    history.extend(live_writes(topic, 0, range(START), now))
    for offset in sorted(accepted):
        history.append((keys[offset], encode(now, tid, 0, offset, offset + 1)))
        history.extend(next(outside) for _ in range(40))
    history.extend((keys[o], encode(now, tid, 0, o, o + 1)) for o in range(END, 700))
    write_ledger(kafka_bootstrap, settings.ledger_topic_name, history)

    window = 60
    run = _replay(settings, topic, window)

    assert run.finished
    assert run.summary.consumed == END - START
    assert run.summary.skipped == len(accepted)
    assert run.summary.delivered_total == END - START - len(accepted)
    stats = simulator.stats()
    assert stats["duplicates"] == 0
    sent = {row["key"] for row in simulator.signals()}
    assert sent == {keys[o] for o in range(START, END) if o not in accepted}
    # What it held: at most the window replayed and the one read ahead, never the
    # range's 200 accepted keys at once, nor the 38,000 others.
    assert run.join.windows == 5
    assert 0 < run.join.peak_held <= 2 * window < len(accepted)
    assert run.join.held == 0 and run.join.format1 == 0
    # The plan read back to the last live record below the range, not the history
    # before it.
    assert run.join.planned < len(history)


def test_out_of_order_ledger_records_are_still_skipped_exactly(kafka_bootstrap, simulator):
    topic, keys, settings = _prepare(kafka_bootstrap, simulator, 600, seed=144)
    now = int(time.time() * 1000)
    tid = topic_id(topic)
    rng = random.Random(7)
    history: list[tuple[str, bytes]] = []
    # Writer A (live, format 2) accepted 0-319 with a hole at 250-269 (a crash: the
    # records never landed); writer B, after the rebalance, read again from 260 and
    # wrote its own records (format 3, one per batch of 10) with its own horizons.
    history.extend(
        (keys[o], encode(now, tid, 0, o, o + 1)) for o in range(320) if not 250 <= o < 270
    )
    for first in range(260, 360, 10):
        entries = [(o, keys[o]) for o in range(first, first + 10)]
        value = encode_batch(now, tid, 0, entries, first + 10)
        assert value is not None
        history.append((batch_key(value).hex(), value))
    # A backfill (an earlier redrive) accepted scattered offsets of the range later,
    # in no order, without horizons; format-1 records from before the upgrade name a few.
    scattered = rng.sample(range(360, END), 60)
    history.extend((keys[o], encode(now, tid, 0, o, None)) for o in scattered)
    old_format = rng.sample([o for o in range(360, END) if o not in scattered], 5)
    history.extend((keys[o], encode_v1(now)) for o in old_format)
    # And a late backfill record naming the hole (the range's second window), last.
    history.append((keys[255], encode(now, tid, 0, 255, None)))
    write_ledger(kafka_bootstrap, settings.ledger_topic_name, history)
    accepted = {*range(START, 250), 255, *range(260, 360), *scattered, *old_format}

    run = _replay(settings, topic, window=50)

    assert run.finished
    assert run.summary.skipped == len(accepted)
    assert run.summary.delivered_total == END - START - len(accepted)
    assert simulator.stats()["duplicates"] == 0
    sent = {row["key"] for row in simulator.signals()}
    assert sent == {keys[o] for o in range(START, END) if o not in accepted}
    assert run.join.format1 == len(old_format)
    assert run.join.peak_held <= 2 * 50 + len(old_format)


def test_a_redrive_reads_the_ledger_from_its_dead_letters_not_the_retention(
    kafka_bootstrap, simulator
):
    generated = list(clickstream(300, seed=145, invalid_ratio=0))
    pro_types = types_in_tier(Tier.PRO)
    # PRO events first: the live consumer accepts offsets below the first dead letter
    events = sorted(generated, key=lambda e: e.signal_type not in pro_types)
    keys = list(expected_signals(events))
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_sealed(kafka_bootstrap, topic, events)
    pro = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, subscription_tier=Tier.PRO
    )
    ensure_ledger_topic({"bootstrap.servers": kafka_bootstrap}, pro.ledger_topic_name, 1, WEEK_MS)
    now = int(time.time() * 1000)
    # a week of another source's history, then the live consumer (PRO types only)
    before = write_ledger(
        kafka_bootstrap,
        pro.ledger_topic_name,
        live_writes("elsewhere", 0, range(30_000), now),
    )
    first = run_until_idle(pro, idle_s=1.5)
    rejected = [o for o, k in enumerate(keys) if k not in {r["key"] for r in simulator.signals()}]
    assert first.dead_lettered["subscription"] == len(rejected) and rejected[0] > 0
    # an earlier redrive delivered every other one of them (no horizon, out of order)
    tid = topic_id(topic)
    delivered = rejected[::2]
    write_ledger(
        kafka_bootstrap,
        pro.ledger_topic_name,
        ((keys[o], encode(now, tid, 0, o, None)) for o in reversed(delivered)),
    )

    ultimate = pro.model_copy(update={"subscription_tier": Tier.ULTIMATE})
    settings = bounded_settings(ultimate, redrive_group(ultimate, ["subscription"]))
    origin = DeadLetterOrigin(["subscription"])
    found = dead_letter_keys(
        settings, redrive_bounds(settings, dlq), origin, build_processor(settings)
    )
    assert found.sources == {(topic, 0): (rejected[0], rejected[-1] + 1)}
    joined = redrive_ledger(settings, found)
    assert joined is not None
    held, stats = joined
    assert sorted(held) == sorted(key_digest(keys[o]) for o in delivered)
    # read back to the live record below its first dead letter: not the 30,000 before
    assert 0 < stats.planned + stats.reread < before

    redriven = run_redrive(ultimate, ["subscription"])
    assert redriven.skipped == len(delivered)
    assert redriven.delivered_total == len(rejected) - len(delivered)
    assert simulator.stats()["duplicates"] == 0
    sent = {row["key"] for row in simulator.signals()}
    assert sent == {k for o, k in enumerate(keys) if o not in set(delivered)}


def test_a_stopped_replay_ends_with_its_window_and_a_rerun_sends_nothing_twice(
    kafka_bootstrap, simulator
):
    topic, keys, settings = _prepare(kafka_bootstrap, simulator, 600, seed=146)
    now = int(time.time() * 1000)
    tid = topic_id(topic)
    accepted = set(range(START, END, 2))
    history = [(keys[o], encode(now, tid, 0, o, o + 1)) for o in sorted(accepted)]
    write_ledger(kafka_bootstrap, settings.ledger_topic_name, history)

    def stop_once_sending() -> None:  # SIGTERM, as Kubernetes stops a Job
        deadline = time.monotonic() + 60
        while simulator.stats()["accepted"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_once_sending)
    stopper.start()
    stopped = _replay(settings, topic, window=50)
    stopper.join()

    assert not stopped.finished
    assert 0 < stopped.summary.consumed < END - START  # no window after the signal
    rerun = _replay(settings, topic, window=50)
    assert rerun.finished
    assert rerun.summary.delivered_total == END - START - len(accepted) - (
        stopped.summary.delivered_total
    )
    assert simulator.stats()["duplicates"] == 0
    sent = {row["key"] for row in simulator.signals()}
    assert sent == {keys[o] for o in range(START, END) if o not in accepted}


def test_connect_pipeline_replay_of_more_accepted_keys_than_the_ledger_bound_skips_them_all(
    kafka_bootstrap, simulator
):
    topic, keys, settings = _prepare(kafka_bootstrap, simulator, 1_800, seed=147)
    now = int(time.time() * 1000)
    tid = topic_id(topic)
    first = 300
    accepted = {o for o in range(first, 1_800) if o % 5}  # 1,200: over the bound below
    history = [(keys[o], encode(now, tid, 0, o, o + 1)) for o in sorted(accepted)]
    write_ledger(kafka_bootstrap, settings.ledger_topic_name, history)
    bounded = settings.model_copy(update={"ledger_max_keys": 1_000})  # windows of 250

    report = replay_command(bounded, "--topic", topic, "--from-offset", str(first), "--no-progress")

    assert report["read"] == 1_800 - first
    assert report["skipped_already_delivered"] == len(accepted)  # none evicted, none resent
    assert report["sent"] == 1_800 - first - len(accepted)
    assert simulator.stats()["duplicates"] == 0
    sent = {row["key"] for row in simulator.signals()}
    assert sent == {keys[o] for o in range(first, 1_800) if o not in accepted}
