"""The shop-mix workload of the peer benchmark (``benchmarks.shop_mix``) and its table
(``benchmarks.peers``): a shop's sessions, and a count a run can wait for."""

from __future__ import annotations

import os
import zlib
from collections import Counter

import pytest

from benchmarks import peers, peers_shop
from benchmarks.peers import PeerRow, cost, markdown, ratio
from benchmarks.peers_shop import environment, expected_for
from benchmarks.shop_mix import PARTITIONS, ShopStream, expected_signals, shop_stream
from pipeline.config import Settings

APP = "bench-app-key"


@pytest.fixture(scope="module")
def stream() -> ShopStream:
    return shop_stream(6_000)


def test_the_mix_is_sessions_of_a_shop_keyed_to_their_partitions(stream: ShopStream) -> None:
    assert len(stream.records) == 6_000
    assert set(stream.types) >= {"pageView", "productView", "addToCart", "order", "error"}
    assert not {"cartAbandonment", "browseAbandonment"} & set(stream.types)
    assert stream.types["pageView"] > stream.types["addToCart"] > stream.types["order"]
    assert len(stream.records) / stream.sessions > 10  # sessions of several events
    assert {r.partition for r in stream.records} == set(range(PARTITIONS))
    for record in stream.records:
        assert record.partition == zlib.crc32(record.key) % PARTITIONS
        assert record.value[:2] == b"\xc3\x01"  # Avro single-object encoding
    # pace 1: ~0.5 s of event time per event (200,000 span ~29 h), past the 30-minute gap
    assert 1800 < stream.event_time_span_s < 6_000 * 0.6


def test_without_derivation_every_event_is_one_signal(stream: ShopStream) -> None:
    expected = expected_signals(stream, Settings(topics=["t"], default_app_key=APP))
    assert (expected.source, expected.total, expected.derived) == (6_000, 6_000, Counter())


def test_with_derivation_a_few_percent_of_events_close_an_abandoned_session(
    stream: ShopStream,
) -> None:
    expected = expected_signals(
        stream, Settings(topics=["t"], default_app_key=APP, derive_abandonment="both")
    )
    assert expected.source == 6_000
    assert set(expected.derived) == {"cartAbandonment", "browseAbandonment"}
    assert 0.01 < sum(expected.derived.values()) / expected.source < 0.06
    # the last half hour's sessions stay open: only the wall clock would close them
    assert expected.open_at_end > 0
    cart_only = expected_signals(
        stream, Settings(topics=["t"], default_app_key=APP, derive_abandonment="cart")
    )
    assert cart_only.derived == Counter(cartAbandonment=expected.derived["cartAbandonment"])


def test_a_variant_is_counted_with_its_own_settings(
    stream: ShopStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPELINE_DERIVE_ABANDONMENT", raising=False)
    assert expected_for(stream, "PM").total == 6_000
    assert expected_for(stream, "PMD").total > 6_000
    assert "PIPELINE_DERIVE_ABANDONMENT" not in os.environ  # restored after


def test_environment_restores_what_it_changed() -> None:
    os.environ["BENCH_SHOP_TEST_KEPT"] = "before"
    try:
        with environment({"BENCH_SHOP_TEST_KEPT": "during", "BENCH_SHOP_TEST_NEW": "x"}):
            assert os.environ["BENCH_SHOP_TEST_KEPT"] == "during"
        assert os.environ["BENCH_SHOP_TEST_KEPT"] == "before"
        assert "BENCH_SHOP_TEST_NEW" not in os.environ
    finally:
        os.environ.pop("BENCH_SHOP_TEST_KEPT", None)


def _row(name: str, eps: float, cpu: float, workload: str = "shop") -> PeerRow:
    return PeerRow(name, eps, cpu, 4.0, 100.0, eps, eps * 1.03, workload)


def test_the_shop_table_gives_the_cost_over_pm_and_no_ratio_to_other_workloads() -> None:
    pm, pmd = _row("PM", 10_000, 50), _row("PMD", 8_000, 60)
    c = _row("C", 15_000, 40, workload="addToCart")
    assert cost(pmd, pm) == "CPU +20%, wall +25%"
    assert cost(pm, pm) == "-"
    assert ratio(pm, c) == "-"
    lines = markdown([c, pm, pmd])
    assert lines[0].startswith("| variant | events/s")
    assert lines[2].startswith("| C | 15,000 | 1.00x")
    shop = lines[lines.index("") + 1 :]
    assert shop[0].startswith("| variant (shop mix) | source events/s | signals/s")
    assert shop[2] == "| PM | 10,000 | 10,300 | 50 | 100 | 4.0 | - |"
    assert shop[3] == "| PMD | 8,000 | 8,240 | 60 | 100 | 4.0 | CPU +20%, wall +25% |"


def test_the_shop_variants_run_through_their_runner_not_the_harness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[list[str], int]] = []

    def run_shop(variants: list[str], runs: int) -> list[PeerRow]:
        asked.append((list(variants), runs))
        return [_row(v, 1_000, 50) for v in variants]

    def no_harness(*args: object, **kwargs: object) -> None:
        raise AssertionError("the harness ran")

    monkeypatch.setattr(peers_shop, "run_shop", run_shop)
    monkeypatch.setattr(peers.subprocess, "run", no_harness)
    table = peers.run_peers(["PMD", "PM"], 3)
    assert asked == [(["PMD", "PM"], 3)]
    assert [r.variant for r in table] == ["PMD", "PM"]
