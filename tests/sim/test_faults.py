"""Each fault mode over real HTTP, its admin endpoint, and determinism under a seed."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict

import httpx
import pytest
from connect_sim.faults import FaultPlan, Faults

from tests.sim.conftest import SimClient, signal


def status_sequence(sim: SimClient, n: int) -> list[int]:
    return [sim.post([signal()]).status_code for _ in range(n)]


def test_server_errors_are_500_502_and_503_and_record_nothing(sim: SimClient) -> None:
    sim.faults(error_rate=1.0)
    statuses = status_sequence(sim, 30)
    assert set(statuses) == {500, 502, 503}
    assert sim.stats()["accepted"] == 0 and sim.signals() == []
    assert sum(sim.stats()["faults"].values()) == 30


def test_an_error_rate_is_a_probability(sim: SimClient) -> None:
    sim.faults(error_rate=0.3, seed=5)
    statuses = Counter(status_sequence(sim, 100))
    assert 15 <= 100 - statuses[200] <= 45
    assert sim.stats()["accepted"] == statuses[200]


def test_the_same_seed_gives_the_same_faults(sim: SimClient) -> None:
    settings = {"seed": 11, "error_rate": 0.3, "rate_limit_rate": 0.2}
    sim.faults(**settings)
    first = status_sequence(sim, 40)
    sim.faults(**settings)  # setting the faults re-seeds
    assert status_sequence(sim, 40) == first
    sim.handle.reset()  # so does a reset
    assert status_sequence(sim, 40) == first
    sim.faults(**{**settings, "seed": 12})
    assert status_sequence(sim, 40) != first
    assert {429, 200} <= set(first) and set(first) & {500, 502, 503}


def test_a_burst_of_429_with_retry_after(sim: SimClient) -> None:
    sim.faults(rate_limit_burst=3, retry_after_s=2)
    responses = [sim.post([signal()]) for _ in range(5)]
    assert [r.status_code for r in responses] == [429, 429, 429, 200, 200]
    assert [r.headers.get("retry-after") for r in responses[:3]] == ["2", "2", "2"]
    assert sim.stats()["accepted"] == 2


def test_a_rate_limit_rate(sim: SimClient) -> None:
    sim.faults(rate_limit_rate=1.0, retry_after_s=0.5)
    response = sim.post([signal()])
    assert response.status_code == 429 and response.headers["retry-after"] == "0.5"


def timed(sim: SimClient) -> float:
    started = time.perf_counter()
    assert sim.post([signal()]).status_code == 200
    return time.perf_counter() - started


def test_fixed_latency(sim: SimClient) -> None:
    sim.faults(latency_ms=150)
    assert all(0.15 <= timed(sim) < 3.0 for _ in range(3))


def test_random_latency_within_its_range(sim: SimClient) -> None:
    settings = Faults(latency_ms=20, latency_jitter_ms=200, seed=3)
    plan = FaultPlan(settings)  # the server's draws, in the same order
    drawn = [(plan.next_fault(), plan.latency_s())[1] for _ in range(8)]
    assert max(drawn) - min(drawn) > 0.1  # seed 3: from 33 to 207 ms
    sim.faults(**asdict(settings))
    times = [timed(sim) for _ in range(8)]
    assert all(d <= t < d + 3.0 for t, d in zip(times, drawn, strict=True))


def test_a_dropped_connection_records_nothing(sim: SimClient) -> None:
    sim.faults(drop_connection_rate=1.0)
    with pytest.raises(httpx.TransportError):
        sim.post([signal()], key="b1")
    assert sim.stats()["accepted"] == 0 and sim.stats()["faults"] == {"drop": 1}
    sim.faults()
    assert sim.post([signal()], key="b1").status_code == 200  # the retry goes through


def test_a_connection_dropped_after_processing_is_saved_by_idempotency(sim: SimClient) -> None:
    sim.faults(drop_after_processing_rate=1.0)
    with pytest.raises(httpx.TransportError):
        sim.post([signal()], key="b1", signal_keys=["s1"])
    assert sim.stats()["accepted"] == 1  # recorded, though the client never heard
    sim.faults()
    retry = sim.post([signal()], key="b1", signal_keys=["s1"])
    assert retry.status_code == 200 and retry.json()["data"]["createSignals"]["signalIds"]
    stats = sim.stats()
    assert stats["accepted"] == 1 and stats["replayed"] == 1 and stats["duplicates"] == 0


def test_without_idempotency_that_retry_is_a_duplicate(sim: SimClient) -> None:
    sim.idempotency(enabled=False)
    sim.faults(drop_after_processing_rate=1.0)
    with pytest.raises(httpx.TransportError):
        sim.post([signal()], key="b1", signal_keys=["s1"])
    sim.faults()
    sim.post([signal()], key="b1", signal_keys=["s1"])
    stats = sim.stats()
    assert stats["accepted"] == 2 and stats["duplicates"] == 1


def test_a_timeout_hangs_then_serves_late(sim: SimClient) -> None:
    sim.faults(timeout_rate=1.0, timeout_s=1.0)
    with pytest.raises(httpx.ReadTimeout):
        sim.post([signal()], key="late", timeout=0.3)
    assert sim.stats()["accepted"] == 0
    # the server finishes the abandoned call later: a client that retried without an
    # Idempotency-Key would now have its signals twice
    deadline = time.monotonic() + 5
    while sim.stats()["accepted"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sim.stats()["accepted"] == 1
    assert sim.stats()["faults"] == {"timeout": 1}


def test_whole_batch_rejection(sim: SimClient) -> None:
    batch = [signal(), signal("order", currency="USX"), signal("error")]
    sim.faults(reject_whole_batch=True)
    body = sim.post(batch).json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["index"] == 1
    assert sim.stats()["accepted"] == 0 and sim.signals() == []
    # the client isolates the bad one and re-sends the rest
    assert "errors" not in sim.post([batch[0], batch[2]]).json()
    sim.faults()  # and without the mode the good ones of a mixed batch are kept
    ids = sim.post(batch).json()["data"]["createSignals"]["signalIds"]
    assert [i is None for i in ids] == [False, True, False]
    assert sim.stats()["accepted"] == 4


def test_faults_apply_to_createsignals_only(sim: SimClient) -> None:
    sim.faults(error_rate=1.0, drop_connection_rate=1.0)
    assert sim.http.get("/stats").status_code == 200
    assert sim.http.get("/healthz").status_code == 200


def test_auth_is_checked_before_a_fault_answers(sim: SimClient) -> None:
    sim.faults(error_rate=1.0)
    response = httpx.post(sim.handle.graphql_url, json={"query": "mutation { x }"})
    assert response.status_code == 401


def test_the_admin_endpoint(sim: SimClient) -> None:
    current = sim.http.get("/admin/faults").json()
    assert current["error_rate"] == 0 and current["reject_whole_batch"] is False
    updated = sim.faults(error_rate=0.5, latency_ms=10)
    assert (updated["error_rate"], updated["latency_ms"], updated["seed"]) == (0.5, 10, 0)
    for bad in ({"no_such_fault": 1}, {"error_rate": "high"}, {"reject_whole_batch": 1}):
        response = sim.http.post("/admin/faults", json=bad)
        assert response.status_code == 400, bad
    assert sim.http.get("/admin/faults").json()["error_rate"] == 0.5  # unchanged
    for bad_setting in ({"ttl_s": "long"}, {"ttl_s": -1}, {"enabled": 1}, {"other": 1}, [1]):
        response = sim.http.post("/admin/idempotency", json=bad_setting)
        assert response.status_code == 400, bad_setting
    assert sim.http.post("/admin/faults", content=b"{oops").status_code == 400
    assert sim.http.post("/admin/idempotency", content=b"{oops").status_code == 400
    assert sim.http.get("/admin/idempotency").json() == {"enabled": True, "ttl_s": 3600}
