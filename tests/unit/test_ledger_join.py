"""The ledger join's pure parts: the windows it replays and the blocks each one reads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.kafka.ledger_join import BLOCK, LedgerJoin, Window


@pytest.fixture(name="join")
def join_fixture() -> Iterator[LedgerJoin]:
    ranges = {("a", 0): (100, 350), ("b", 0): (0, 120), ("a", 1): (5, 5)}
    join = LedgerJoin({}, "ledger", 2, ranges, window=100, cutoff_ms=lambda: 0)
    yield join
    join.close()  # nothing read: no Kafka client was made


def test_windows_step_each_partition_by_the_window_until_its_end(join: LedgerJoin) -> None:
    windows = [(w.start, w.end) for w in join.windows()]
    assert windows == [
        ({("a", 0): 100, ("b", 0): 0}, {("a", 0): 200, ("b", 0): 100}),
        ({("a", 0): 200, ("b", 0): 100}, {("a", 0): 300, ("b", 0): 120}),
        ({("a", 0): 300}, {("a", 0): 350}),  # an empty range ("a", 1) never appears
    ]


def test_a_window_reads_only_the_blocks_that_name_it_merged_into_stretches(
    join: LedgerJoin,
) -> None:
    join._ends[0] = (10, 5 * BLOCK + 7)
    join._map[0] = {
        0: {("a", 0): [100, 180]},
        1: {("a", 0): [150, 260], ("b", 0): [0, 3]},
        2: {("b", 0): [50, 60]},
        3: {("a", 0): [340, 349]},
        5: {("a", 0): [120, 121]},  # a late record (a backfill) naming the first window
    }
    first = Window({("a", 0): 100}, {("a", 0): 200})
    assert join._runs(first) == {0: [(10, 2 * BLOCK), (5 * BLOCK, 5 * BLOCK + 7)]}
    both = Window({("a", 0): 200, ("b", 0): 100}, {("a", 0): 300, ("b", 0): 120})
    assert join._runs(both) == {0: [(BLOCK, 2 * BLOCK)]}
    assert join._runs(Window({("b", 0): 0}, {("b", 0): 100})) == {0: [(BLOCK, 3 * BLOCK)]}
    assert join._runs(Window({("a", 0): 300}, {("a", 0): 340})) == {}


def test_a_replay_window_spans_the_whole_range_when_sessions_are_derived() -> None:
    from pipeline.config import DeriveAbandonment, Settings
    from pipeline.kafka.replay import window_size

    base = Settings(topics=["t"], ledger_max_keys=4_000)
    assert window_size(base, 1_000_000) == 1_000
    deriving = base.model_copy(update={"derive_abandonment": DeriveAbandonment.CART})
    assert window_size(deriving, 1_000_000) == 1_000_000  # a session may cross any window end
