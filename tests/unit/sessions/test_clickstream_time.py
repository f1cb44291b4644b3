"""The synthetic clickstream is in event-time order: with derivation on, only the
events it means to be late are counted late, whatever the session gap."""

from __future__ import annotations

import zlib
from datetime import timedelta

import pytest
from devtools.clickstream import clickstream
from devtools.demo import DEMO_PACE, DEMO_SESSION_GAP_S, DEMO_SESSION_GRACE_S
from devtools.producer import EventEncoder

from pipeline.config import DEFAULT_AVRO_DIR, Settings
from pipeline.kafka.runner import build_processor
from pipeline.sessions.derive import KINDS, DeriveOptions
from pipeline.sessions.store import SessionOptions, SessionStore
from pipeline.signals.mapping import MappedSignal, MappingOptions


def _late_counted(pace: float, gap_ms: int, grace_ms: int, late_ratio: float) -> tuple[int, int]:
    """(events the store counted late, events the generator made late), three
    partitions keyed by sessionId as the producer keys them."""
    events = list(
        clickstream(3_000, seed=11, invalid_ratio=0, v1_ratio=0, pace=pace, late_ratio=late_ratio)
    )
    processor = build_processor(Settings(topics=["clicks"], default_app_key="app"))
    encoder = EventEncoder(DEFAULT_AVRO_DIR)
    options = SessionOptions(
        DeriveOptions(KINDS["both"], MappingOptions("app")), gap_ms=gap_ms, grace_ms=grace_ms
    )
    stores = [SessionStore("clicks", options) for _ in range(3)]
    for offset, event in enumerate(events):
        signal = processor.process(encoder.encode(event))
        assert isinstance(signal, MappedSignal)
        store = stores[zlib.crc32(str(event.record["sessionId"]).encode()) % 3]
        store.observe(signal, offset=offset)
    return sum(s.counters.late for s in stores), sum(e.late for e in events)


@pytest.mark.parametrize(
    ("pace", "gap_ms", "grace_ms"),
    [
        (1.0, 1_800_000, 60_000),
        (1.0, 60_000, 1_000),
        (DEMO_PACE, round(DEMO_SESSION_GAP_S * 1000), round(DEMO_SESSION_GRACE_S * 1000)),
    ],
    ids=["defaults", "one-minute-gap", "demo"],
)
def test_only_the_deliberately_late_events_are_late(
    pace: float, gap_ms: int, grace_ms: int
) -> None:
    late, meant = _late_counted(pace, gap_ms, grace_ms, late_ratio=0.02)
    assert meant > 20
    assert late == meant


def test_without_late_events_none_is_late_even_with_a_short_gap() -> None:
    assert _late_counted(DEMO_PACE, 3_000, 500, late_ratio=0.0) == (0, 0)


def test_late_events_do_not_change_the_rest_of_the_stream() -> None:
    plain = list(clickstream(500, seed=3))
    with_late = [e for e in clickstream(520, seed=3, late_ratio=0.05) if not e.late]
    assert [e.record for e in plain][:400] == [e.record for e in with_late][:400]
    times = [e.record["eventTime"] for e in plain]
    assert times == sorted(times)  # one clock for the stream
    stragglers = [e for e in clickstream(500, seed=3, late_ratio=0.05) if e.late]
    assert stragglers and all(
        e.record["eventTime"] < times[0] - timedelta(hours=1) for e in stragglers
    )
