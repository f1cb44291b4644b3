"""Format 3 against a real broker: one ledger record per delivered batch and source
partition, read back by the loader (tails, ranges, mixed with format 2), and written
so by the consumer."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from devtools.clickstream import clickstream

from pipeline.kafka.ledger import LedgerIndex, LedgerLoader, TailRequest
from pipeline.kafka.ledger_loader import FIRST_CHUNK
from pipeline.kafka.ledger_records import (
    Horizons,
    batch_key,
    decode,
    encode_batch,
    topic_id,
)
from tests.integration.consumer_harness import (
    expected_signals,
    new_topics,
    produce,
    read_topic,
    run_until_idle,
    settings_for,
)
from tests.integration.ledger_harness import (  # noqa: F401  (fixtures)
    create_ledger,
    live_writes,
    module_simulator_fixture,
    simulator_fixture,
    write_ledger,
)

pytestmark = pytest.mark.integration

WEEK_MS = 7 * 24 * 3_600_000
SIGNALS = 40_000
BATCH = 25


def batch_writes(
    topic: str, partition: int, first: int, count: int, seed: int, horizons: Horizons
) -> Iterator[tuple[str, bytes]]:
    """Format-3 records as a live writer leaves them: batches of 25 consecutive offsets,
    completing out of order (several in flight), horizons rising."""
    rng = random.Random(seed)
    starts = list(range(first, first + count, BATCH))
    order = sorted(starts, key=lambda start: start + rng.randrange(BATCH * 8))
    now = int(time.time() * 1000)
    tid = topic_id(topic)
    for start in order:
        items = [(o, f"k-{o}") for o in range(start, min(start + BATCH, first + count))]
        horizon = horizons.next(topic, partition, items[-1][0])
        value = encode_batch(now, tid, partition, items, horizon)
        assert value is not None
        yield batch_key(value).hex(), value  # write_ledger takes str keys


def new_loader(bootstrap: str, ledger: str) -> LedgerLoader:
    index = LedgerIndex(max_keys=1_000_000, retention_ms=WEEK_MS)
    return LedgerLoader({"bootstrap.servers": bootstrap}, ledger, index)


@pytest.fixture(scope="module", name="mixed_ledger")
def mixed_ledger_fixture(kafka_bootstrap: str) -> str:
    """clicks[0]: offsets 0-9,999 in format 2 (before the upgrade), 10,000-49,999 in
    format 3, out of order as delivered."""
    ledger = create_ledger(kafka_bootstrap)
    now = int(time.time() * 1000)
    write_ledger(kafka_bootstrap, ledger, live_writes("clicks", 0, range(10_000), now))
    horizons = Horizons()
    horizons.assigned("clicks", 0, 10_000)  # the upgraded writer loaded the format-2 tail
    write_ledger(kafka_bootstrap, ledger, batch_writes("clicks", 0, 10_000, SIGNALS, 7, horizons))
    return ledger


def test_a_restart_reads_a_format_3_tail_back_to_its_horizon_only(
    kafka_bootstrap: str, mixed_ledger: str
) -> None:
    loader = new_loader(kafka_bootstrap, mixed_ledger)
    committed = 49_000
    highs = loader.load_tails([TailRequest("clicks", 0, committed)], ledger_partitions=1)
    missing = [o for o in range(committed, 50_000) if f"k-{o}" not in loader.index]
    assert missing == []
    assert highs == {("clicks", 0): 50_000}
    # 1,600 records hold 40,000 keys: the first chunk back (4,096 records from an end
    # the embedded broker undercounts) reaches the stop; the format-2 part is not read
    assert loader.progress.records < FIRST_CHUNK + 1_600
    assert loader.progress.keys < 1_000 + 16 * BATCH  # the tail, give or take disorder
    assert f"k-{committed - 2_000}" not in loader.index


def test_a_tail_across_the_upgrade_reads_both_formats(
    kafka_bootstrap: str, mixed_ledger: str
) -> None:
    loader = new_loader(kafka_bootstrap, mixed_ledger)
    loader.load_tails([TailRequest("clicks", 0, 9_500)], ledger_partitions=1)
    assert all(f"k-{o}" in loader.index for o in range(9_500, 50_000))


def test_a_range_keeps_only_its_own_entries_of_a_batch_record(
    kafka_bootstrap: str, mixed_ledger: str
) -> None:
    loader = new_loader(kafka_bootstrap, mixed_ledger)
    # 20,010 and 22,010 fall inside batches: only the range's half of those is kept
    loader.load_tails([TailRequest("clicks", 0, 20_010, end=22_010)], ledger_partitions=1)
    assert len(loader.index) == 2_000
    assert "k-20009" not in loader.index and "k-22010" not in loader.index
    assert "k-20010" in loader.index and "k-22009" in loader.index


@pytest.mark.parametrize("transactions", [True, False], ids=["transactional", "plain"])
def test_the_consumer_writes_one_record_per_batch_and_a_restart_skips_them(
    kafka_bootstrap: str, simulator: Any, transactions: bool
) -> None:
    events = list(clickstream(400, seed=1403, invalid_ratio=0))
    keys = set(expected_signals(events))
    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    produce(kafka_bootstrap, topic, events)
    settings = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, transactions=transactions
    )
    summary = run_until_idle(settings, idle_s=1.0)
    assert summary.delivered_total == len(keys)
    records = read_topic(kafka_bootstrap, settings.ledger_topic_name, expected=1, timeout_s=10)
    decoded = [decode(r.value()) for r in records]
    held = [key for record in decoded if record and record.entries for _, key in record.entries]
    assert sorted(held) == sorted(keys)  # every key once, in batch records only
    assert len(records) <= len(keys) // 10  # one a batch and partition, not one a signal
    # a new group over the same ledger: nothing committed, everything skipped
    again = settings.model_copy(
        update={
            "group_id": f"{settings.group_id}-again",
            "ledger_topic": settings.ledger_topic_name,
        }
    )
    assert run_until_idle(again, idle_s=1.0).skipped == len(keys)
    assert simulator.stats()["accepted"] == len(keys) and simulator.stats()["duplicates"] == 0
