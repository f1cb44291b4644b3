"""signalTimestamp text: from a datetime (the regular path) and from epoch milliseconds
(the codec's lane), against datetime's own ISO 8601, over the whole range validation
allows; and the cache holds hours, so a backlog read from partitions far apart in
event time does not format every second again."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.signals import mapping
from pipeline.signals.fused import EARLIEST_MS, LATEST_MS
from pipeline.signals.mapping import format_millis, format_timestamp

DAY = 86_400_000


def _iso(epoch_ms: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _moments() -> list[int]:
    rng = random.Random(17)
    edges = [EARLIEST_MS, LATEST_MS - 1, 951_782_400_000]  # and 2000-02-29
    # every edge of a second, minute, hour and day near the starts of random days
    days = [rng.randrange(EARLIEST_MS, LATEST_MS) // DAY * DAY for _ in range(20)]
    around = [
        day + delta
        for day in days
        for delta in (-DAY, -3_600_001, -60_001, -1001, -1, 0, 1, 999, 1000, 3_599_999)
    ]
    return (
        edges
        + [m for m in around if EARLIEST_MS <= m < LATEST_MS]
        + [rng.randrange(EARLIEST_MS, LATEST_MS) for _ in range(3000)]
    )


@pytest.mark.parametrize("epoch_ms", _moments()[:40])
def test_edges(epoch_ms: int) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    assert format_millis(epoch_ms) == format_timestamp(moment) == _iso(epoch_ms)


def test_random_moments_in_the_valid_range() -> None:
    for epoch_ms in _moments():
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
        assert format_millis(epoch_ms) == format_timestamp(moment) == _iso(epoch_ms), epoch_ms


def test_partitions_far_apart_in_event_time_cost_one_format_per_hour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six partitions, each at its own place in two days of events a second apart, read
    in turns: the text of an hour is made once, not once per partition and second."""
    formatted: list[object] = []
    strftime = time.strftime
    monkeypatch.setattr(time, "strftime", lambda f, t: formatted.append(t) or strftime(f, t))
    monkeypatch.setattr(mapping, "_HOURS", {})
    start = 1_714_521_600_000  # 2024-05-01
    per_partition = 2 * DAY // 1000 // 6
    cursors = [start + p * per_partition * 1000 for p in range(6)]
    texts = []
    for _ in range(per_partition):
        for p, at in enumerate(cursors):
            texts.append(format_millis(at))
            cursors[p] = at + 1000
    assert len(texts) == 6 * per_partition
    assert len(formatted) <= 2 * 24 + 6, len(formatted)
    assert texts[0] == "2024-05-01T00:00:00.000Z"
