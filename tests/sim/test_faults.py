"""Each fault mode over real HTTP, its admin endpoint, and determinism under a seed."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict

import httpx
import pytest
from connect_sim.faults import MALFORMED_SHAPES, TRANSIENT_CODES, FaultPlan, Faults

from pipeline.connect.client import Verdict, classify_response
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


# --- answers a client cannot take at face value (issue 12) ----------------------------


@pytest.mark.parametrize("shape", list(MALFORMED_SHAPES))
def test_each_malformed_shape_is_served_and_records_nothing(sim: SimClient, shape: str) -> None:
    sim.faults(burst=1, burst_fault="malformed", malformed_shape=shape)
    response = sim.post([signal()], key="b1", signal_keys=["s1"])
    status, headers, body = MALFORMED_SHAPES[shape]
    assert (response.status_code, response.content) == (status, body)
    assert response.headers["content-type"].startswith(headers)
    verdict = classify_response(response.status_code, response.headers, response.content, 1)
    assert verdict.verdict is Verdict.UNKNOWN  # the pipeline's reading of it
    assert sim.stats()["accepted"] == 0 and sim.stats()["faults"] == {f"malformed:{shape}": 1}
    retry = sim.post([signal()], key="b1", signal_keys=["s1"])  # then answered normally
    assert retry.json()["data"]["createSignals"]["signalIds"] == ["sig-1"]


@pytest.mark.parametrize("code", ["THROTTLED", "INTERNAL_SERVER_ERROR", "BAD_USER_INPUT"])
def test_a_coded_graphql_error_in_a_200(sim: SimClient, code: str) -> None:
    sim.faults(graphql_error_rate=1.0, graphql_error_code=code)
    response = sim.post([signal()])
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None and body["errors"][0]["extensions"] == {"code": code}
    assert sim.stats()["accepted"] == 0 and sim.stats()["faults"] == {f"graphql_error:{code}": 1}


def test_any_code_is_a_transient_one_chosen_under_the_seed(sim: SimClient) -> None:
    sim.faults(graphql_error_rate=1.0, graphql_error_code="any", seed=4)
    codes = [sim.post([signal()]).json()["errors"][0]["extensions"]["code"] for _ in range(20)]
    assert len(set(codes)) > 2 and set(codes) <= set(TRANSIENT_CODES)
    sim.faults(graphql_error_rate=1.0, graphql_error_code="any", seed=4)
    assert [sim.post([signal()]).json()["errors"][0]["extensions"]["code"] for _ in range(20)] == (
        codes
    )


def test_a_proxy_407_page_and_a_gateway_504(sim: SimClient) -> None:
    sim.faults(proxy_407_rate=1.0)
    proxy = sim.post([signal()])
    assert proxy.status_code == 407 and b"Proxy Authentication" in proxy.content
    assert proxy.headers["proxy-authenticate"].startswith("Basic")
    sim.faults(gateway_timeout_rate=1.0)
    gateway = sim.post([signal()])
    assert gateway.status_code == 504 and b"Gateway" in gateway.content
    assert sim.stats()["accepted"] == 0


def test_large_batches_get_504_small_ones_go_through(sim: SimClient) -> None:
    sim.faults(gateway_timeout_over_signals=2)
    assert sim.post([signal()] * 3).status_code == 504
    assert sim.post([signal()] * 2).status_code == 200
    stats = sim.stats()
    assert stats["accepted"] == 2 and stats["faults"] == {"504_large": 1}


def test_a_burst_of_any_fault_then_normal_answers(sim: SimClient) -> None:
    sim.faults(burst=2, burst_fault="407")
    assert [sim.post([signal()]).status_code for _ in range(3)] == [407, 407, 200]


def test_answer_faults_do_not_shift_the_other_faults_sequence(sim: SimClient) -> None:
    sim.faults(seed=11, error_rate=0.3)
    before = status_sequence(sim, 40)
    sim.faults(seed=11, error_rate=0.3, proxy_407_rate=0.3)
    after = status_sequence(sim, 40)
    assert 407 in after
    assert [s for s in before if s != 200] == [s for s in after if s not in (200, 407)]


@pytest.mark.parametrize(
    "bad",
    [
        {"malformed_shape": "weird"},
        {"burst_fault": "nope"},
        {"graphql_error_code": ""},
        {"graphql_error_code": 5},
        {"burst": -1},
    ],
)
def test_answer_fault_settings_are_checked(sim: SimClient, bad: dict[str, object]) -> None:
    assert sim.http.post("/admin/faults", json=bad).status_code == 400


def test_the_chaos_run_mixes_the_answer_faults_in() -> None:
    from devtools.chaos import simulator_faults

    settings = simulator_faults(7, burst=3)
    faults = Faults.from_json(settings)  # every setting is one the simulator knows
    assert faults.rate_limit_burst == 3
    assert min(faults.graphql_error_rate, faults.malformed_rate, faults.proxy_407_rate) > 0
    assert faults.gateway_timeout_rate > 0 and faults.graphql_error_code == "any"
    plan = FaultPlan(faults)
    seen = {(plan.next_fault() or "").partition(":")[0] for _ in range(5_000)}
    assert {"graphql_error", "malformed", "407", "504", "429"} <= seen
