"""Pure parts of the simulator, one function at a time (no server)."""

from __future__ import annotations

import pytest
from connect_sim.faults import FaultPlan, Faults
from connect_sim.headers import parse_sf_list, parse_sf_string
from connect_sim.idempotency import IdempotencyStore, Verdict
from connect_sim.simulator import Config, Simulator

from tests.sim.conftest import CREATE_SIGNALS, signal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"abc"', "abc"),
        ('  "a b"  ', "a b"),
        ('""', ""),
        (r'"a\"b\\c"', 'a"b\\c'),
        ("abc", None),
        ('"a', None),
        ('"a"b"', None),
        (r'"a\x"', None),
        ('"tab\there"', None),
        ('"é"', None),
    ],
)
def test_sf_string(text: str, expected: str | None) -> None:
    assert parse_sf_string(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"a", "b"', ["a", "b"]),
        ('"a","b"\t,  "c"', ["a", "b", "c"]),
        ("", []),
        ('"a"', ["a"]),
        (r'"a\",", "b"', ['a",', "b"]),
        ('"a",', None),
        (',"a"', None),
        ('"a" "b"', None),
        ("a, b", None),
        ('"a",,"b"', None),
    ],
)
def test_sf_list(text: str, expected: list[str] | None) -> None:
    assert parse_sf_list(text) == expected


def test_sf_list_is_linear_on_long_hostile_input() -> None:
    import time

    started = time.perf_counter()
    assert parse_sf_list('"' + "a" * 50_000 + '" x') is None
    assert parse_sf_list(", ".join(f'"k-{i}"' for i in range(10_000))) is not None
    assert time.perf_counter() - started < 1.0


def test_idempotency_store_lifecycle() -> None:
    store = IdempotencyStore(ttl_s=10)
    assert store.begin("k", "f1", now=0) == (Verdict.NEW, None)
    assert store.begin("k", "f1", now=1)[0] is Verdict.IN_PROGRESS
    store.complete("k", 200, b"{}")
    assert store.begin("k", "f1", now=2)[0] is Verdict.REPLAY
    assert store.begin("k", "f2", now=2)[0] is Verdict.MISMATCH
    assert store.begin("k", "f2", now=10)[0] is Verdict.NEW  # expired
    store.abandon("k")  # died before answering: a retry starts afresh
    assert store.begin("k", "f2", now=11)[0] is Verdict.NEW


def test_idempotency_store_is_bounded() -> None:
    store = IdempotencyStore(ttl_s=1000, max_keys=3)
    for i in range(5):
        store.begin(f"k{i}", "f", now=i)
        store.complete(f"k{i}", 200, b"")
    assert list(store.entries) == ["k2", "k3", "k4"]
    store.begin("k5", "f", now=2000)  # a sweep drops the expired
    assert list(store.entries) == ["k5"]


def test_fault_plan_is_a_function_of_the_seed() -> None:
    faults = Faults(seed=9, error_rate=0.2, drop_connection_rate=0.1, latency_jitter_ms=50)

    def run() -> list[tuple[str | None, float]]:
        plan = FaultPlan(faults)
        return [(plan.next_fault(), plan.latency_s()) for _ in range(200)]

    first = run()
    assert run() == first
    assert {f for f, _ in first} >= {None, "drop", "500", "502", "503"}
    assert all(0 <= t <= 0.05 for _, t in first)


def test_fault_settings_are_validated() -> None:
    assert Faults.from_json({"error_rate": 1, "seed": 3}).error_rate == 1
    for bad in ({"error_rate": -0.1}, {"seed": 1.5}, {"latency_ms": True}, {"x": 1}):
        with pytest.raises(ValueError):
            Faults.from_json(bad)


def test_record_limit_keeps_the_latest_requests_and_exact_counts() -> None:
    import orjson

    sim = Simulator(Config(app_keys=frozenset({"test-app-key"}), record_limit=4))
    for n in range(3):
        signals = [signal(url=f"u{n}-{i}") for i in range(2)]
        body = orjson.dumps({"query": CREATE_SIGNALS, "variables": {"signals": signals}})
        assert sim.answer(body, None, None)[0] == 200
    assert sim.counts["accepted"] == 6
    rows = [orjson.loads(line) for line in sim.accepted_lines()]
    assert [r["signal"]["signalContent"]["url"] for r in rows] == ["u1-0", "u1-1", "u2-0", "u2-1"]
