"""The ledger loader against a real broker: the tail a restart needs, not the retention.

Ledger records are written directly (fast), as a live writer leaves them: batches
complete out of order, horizons rise (``ledger_harness.live_writes``).
"""

from __future__ import annotations

import random
import time

import pytest

from pipeline.kafka.ledger import (
    LedgerIndex,
    LedgerLoader,
    TailRequest,
    ledger_value,
)
from pipeline.kafka.ledger_loader import FIRST_CHUNK
from tests.integration.ledger_harness import create_ledger, live_writes, write_ledger

pytestmark = pytest.mark.integration

WEEK_MS = 7 * 24 * 3_600_000
RECORDS = 60_000


def completion_order(count: int, seed: int, spread: int = 400) -> list[int]:
    """Source offsets in the order a consumer with batches in flight finishes them."""
    rng = random.Random(seed)
    return sorted(range(count), key=lambda offset: offset + rng.randrange(spread))


def new_loader(bootstrap: str, topic: str) -> LedgerLoader:
    index = LedgerIndex(max_keys=1_000_000, retention_ms=WEEK_MS)
    return LedgerLoader({"bootstrap.servers": bootstrap}, topic, index)


@pytest.fixture(scope="module", name="written_ledger")
def written_ledger_fixture(kafka_bootstrap: str) -> str:
    """60,000 records of source partition clicks[0], out of order as delivered."""
    ledger = create_ledger(kafka_bootstrap)
    now = int(time.time() * 1000)
    order = completion_order(RECORDS, seed=5)
    write_ledger(kafka_bootstrap, ledger, live_writes("clicks", 0, order, now))
    return ledger


def test_a_restart_reads_the_tail_past_its_committed_offset_not_the_whole_ledger(
    kafka_bootstrap: str, written_ledger: str
) -> None:
    loader = new_loader(kafka_bootstrap, written_ledger)
    committed = RECORDS - 1_000

    highs = loader.load_tails([TailRequest("clicks", 0, committed)], ledger_partitions=1)

    index = loader.index
    missing = [o for o in range(committed, RECORDS) if f"k-{o}" not in index]
    assert missing == []  # every key that can be re-read, whatever the disorder
    # one chunk back from the end, not 60,000 (the embedded broker's end offset
    # undercounts by a few thousand, so its first chunk starts that much earlier)
    assert loader.progress.records <= FIRST_CHUNK + RECORDS // 5
    assert f"k-{committed - 2_000}" not in index  # long committed: never read
    assert highs == {("clicks", 0): RECORDS}
    assert loader.progress.loading == 0 and loader.progress.loads == 1


def test_a_long_tail_is_read_back_chunk_by_chunk_to_its_first_relevant_record(
    kafka_bootstrap: str, written_ledger: str
) -> None:
    loader = new_loader(kafka_bootstrap, written_ledger)
    committed = RECORDS - 20_000  # a commit that stalled while deliveries went on

    loader.load_tails([TailRequest("clicks", 0, committed)], ledger_partitions=1)

    assert all(f"k-{o}" in loader.index for o in range(committed, RECORDS))
    assert 20_000 <= loader.progress.records < 40_000


def test_a_replayed_range_holds_only_that_ranges_keys(
    kafka_bootstrap: str, written_ledger: str
) -> None:
    loader = new_loader(kafka_bootstrap, written_ledger)

    loader.load_tails([TailRequest("clicks", 0, 45_000, end=50_000)], ledger_partitions=1)

    index = loader.index
    assert len(index) == 5_000
    assert all(f"k-{o}" in index for o in range(45_000, 50_000))
    assert "k-44999" not in index and "k-50000" not in index
    # read back from the end in doubling chunks to the range's start, not from 0
    assert 15_000 <= loader.progress.records <= 2 * 15_000 + RECORDS // 5


def test_nothing_committed_reads_everything_since_the_retention_cutoff(
    kafka_bootstrap: str, written_ledger: str
) -> None:
    loader = new_loader(kafka_bootstrap, written_ledger)

    loader.load_tails([TailRequest("clicks", 0, None)], ledger_partitions=1)

    assert len(loader.index) == RECORDS


def test_old_format_records_are_still_understood(kafka_bootstrap: str) -> None:
    ledger = create_ledger(kafka_bootstrap)
    now = int(time.time() * 1000)
    old = ((f"old-{n}", ledger_value(now - n)) for n in range(5_000))
    write_ledger(kafka_bootstrap, ledger, old)
    loader = new_loader(kafka_bootstrap, ledger)

    # written before the upgrade: no source, no horizon: the whole retention is read,
    # and the new writer's horizon starts past every offset its source holds
    highs = loader.load_tails(
        [TailRequest("clicks", 0, 4_000, source_end=4_321)], ledger_partitions=1
    )
    assert len(loader.index) == 5_000 and "old-0" in loader.index and "old-4999" in loader.index
    assert highs == {("clicks", 0): 4_321}
    unknown = new_loader(kafka_bootstrap, ledger).load_tails(
        [TailRequest("clicks", 0, 4_000)], ledger_partitions=1
    )
    assert unknown == {("clicks", 0): None}  # no bound known: its records get no horizon
