"""Auth, idempotency, observation endpoints and malformed requests, over HTTP."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.sim.conftest import API_KEY, CREATE_SIGNALS, SimClient, signal

# --- auth -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-api-key", None),
        ("x-api-key", "wrong-key"),
        ("x-api-key", f"Bearer {API_KEY}"),
        ("x-api-key", f"{API_KEY}x"),
        ("authorization", f"Bearer {API_KEY}"),
    ],
    ids=["missing", "wrong key", "a scheme", "longer key", "authorization header"],
)
def test_a_missing_or_wrong_key_gets_401_and_records_nothing(
    sim: SimClient, header: str, value: str | None
) -> None:
    headers = {} if value is None else {header: value}
    response = httpx.post(
        sim.handle.graphql_url,
        json={"query": CREATE_SIGNALS, "variables": {"signals": [signal()]}},
        headers=headers,
    )
    assert response.status_code == 401
    assert "API key" in response.json()["errors"][0]["message"]
    assert sim.stats()["accepted"] == 0 and sim.signals() == []
    assert sim.stats()["requests"] == {"401": 1}


def test_the_right_key_is_accepted(sim: SimClient) -> None:
    assert sim.post([signal()]).status_code == 200


# --- idempotency ----------------------------------------------------------------------


def test_a_replay_gets_the_original_response_and_records_nothing(sim: SimClient) -> None:
    batch = [signal(), signal("order")]
    first = sim.post(batch, key="batch-1", signal_keys=["a", "b"])
    again = sim.post(batch, key="batch-1", signal_keys=["a", "b"])
    assert first.status_code == again.status_code == 200
    assert again.content == first.content  # the same signal ids, byte for byte
    stats = sim.stats()
    assert stats["accepted"] == 2 and stats["replayed"] == 1 and stats["duplicates"] == 0
    assert len(sim.signals()) == 2


def test_a_replay_of_a_rejection_is_the_same_rejection(sim: SimClient) -> None:
    batch = [signal("order", currency="USX")]
    first = sim.post(batch, key="batch-bad")
    again = sim.post(batch, key="batch-bad")
    assert again.content == first.content and "errors" in again.json()
    assert sim.stats()["rejected"] == 1  # counted once


def test_the_same_key_with_another_payload_gets_422(sim: SimClient) -> None:
    assert sim.post([signal()], key="batch-1").status_code == 200
    response = sim.post([signal(url="https://other")], key="batch-1")
    assert response.status_code == 422
    assert "different payload" in response.json()["errors"][0]["message"]
    assert sim.stats()["accepted"] == 1


def test_a_repeat_while_the_first_is_processed_gets_409(sim: SimClient) -> None:
    sim.faults(latency_ms=800)  # processing time
    answers: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(sim.post([signal()], key="slow-1", timeout=10))
    )
    thread.start()
    time.sleep(0.3)
    answers.append(sim.post([signal()], key="slow-1", timeout=10))
    thread.join()
    # Whichever arrived second (normally the repeat) met the first in progress.
    assert sorted(r.status_code for r in answers) == [200, 409]
    (done,) = (r for r in answers if r.status_code == 200)
    # once answered, the same repeat is a replay
    assert sim.post([signal()], key="slow-1").content == done.content
    assert sim.stats()["accepted"] == 1


def test_keys_expire_after_the_configured_time(sim: SimClient) -> None:
    assert sim.idempotency(ttl_s=1.0).json() == {"enabled": True, "ttl_s": 1.0}
    first = sim.post([signal()], key="short-lived", signal_keys=["s-1"])
    assert sim.post([signal()], key="short-lived", signal_keys=["s-1"]).content == first.content
    time.sleep(1.1)
    # expired: another payload under the key is no longer a misuse, it is processed
    other = sim.post([signal(url="https://x")], key="short-lived", signal_keys=["s-2"])
    assert other.status_code == 200 and other.content != first.content
    # ... and now the key stands for that payload
    assert sim.post([signal()], key="short-lived", signal_keys=["s-1"]).status_code == 422
    stats = sim.stats()
    assert stats["accepted"] == 2 and stats["replayed"] == 1 and stats["unique_keys"] == 2


def test_switched_off_it_records_every_repeat_as_a_duplicate(sim: SimClient) -> None:
    sim.idempotency(enabled=False)
    for _ in range(3):
        response = sim.post([signal(), signal("order")], key="batch-1", signal_keys=["a", "b"])
        assert response.status_code == 200
    stats = sim.stats()
    assert stats["accepted"] == 6 and stats["duplicates"] == 4 and stats["unique_keys"] == 2
    assert stats["replayed"] == 0
    assert [r["key"] for r in sim.signals()] == ["a", "b"] * 3


@pytest.mark.parametrize("header", ["batch-1", '"unterminated', '"tab\there"', '"a" , "b"'])
def test_a_malformed_idempotency_key_gets_400(sim: SimClient, header: str) -> None:
    response = sim.post([signal()], headers={"Idempotency-Key": header})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"][0]["message"]
    assert sim.stats()["accepted"] == 0


def test_an_escaped_idempotency_key_is_one_key(sim: SimClient) -> None:
    headers = {"Idempotency-Key": r'"a \"quoted\" key\\"'}
    first = sim.post([signal()], headers=headers)
    assert sim.post([signal()], headers=headers).content == first.content
    assert sim.signals()[0]["batchKey"] == 'a "quoted" key\\'


# --- per-signal keys, stats, dump, reset ------------------------------------------------


def test_signal_keys_are_recorded_with_each_signal_and_repeats_counted(sim: SimClient) -> None:
    sim.post([signal(), signal("order"), signal("error")], key="b1", signal_keys=["x", "y", "z"])
    sim.post([signal("order"), signal()], key="b2", signal_keys=["y", "w"])
    sim.post([signal()])  # no keys at all
    rows = sim.signals()
    assert [(r["key"], r["batchKey"]) for r in rows] == [
        ("x", "b1"),
        ("y", "b1"),
        ("z", "b1"),
        ("y", "b2"),
        ("w", "b2"),
        (None, None),
    ]
    stats = sim.stats()
    assert stats["accepted"] == 6
    assert stats["duplicates"] == 1  # y, seen again
    assert stats["unique_keys"] == 4
    assert stats["requests"] == {"200": 3}


@pytest.mark.parametrize(
    "header", ['"only-one"', '"a", "b", "c"', "a, b", '"a",', '"a" "b"'], ids=repr
)
def test_signal_keys_must_be_one_sf_string_per_signal(sim: SimClient, header: str) -> None:
    response = sim.post([signal(), signal()], headers={"Signal-Idempotency-Keys": header})
    assert response.status_code == 400
    assert "Signal-Idempotency-Keys" in response.json()["errors"][0]["message"]
    assert sim.stats()["accepted"] == 0


def test_rejections_are_counted_and_not_recorded(sim: SimClient) -> None:
    sim.post([signal(), signal("order", currency="USX"), {**signal(), "appKey": "x"}])
    stats = sim.stats()
    assert (stats["accepted"], stats["rejected"]) == (1, 2)
    assert len(sim.signals()) == 1


def test_the_dump_is_json_lines(sim: SimClient) -> None:
    sim.post([signal(), signal("order")], signal_keys=["a", "b"])
    response = sim.http.get("/signals")
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.content.splitlines()
    assert len(lines) == 2 and response.content.endswith(b"\n")
    rows = [orjson.loads(line) for line in lines]
    assert set(rows[0]) == {"key", "batchKey", "receivedAt", "signal"}
    assert rows[1]["signal"] == signal("order")
    assert abs(rows[0]["receivedAt"] - time.time()) < 60


def test_reset_forgets_signals_counts_and_keys(sim: SimClient) -> None:
    sim.post([signal()], key="b1", signal_keys=["a"])
    sim.http.post("/reset").raise_for_status()
    assert sim.signals() == []
    stats = sim.stats()
    assert (stats["accepted"], stats["unique_keys"], stats["requests"]) == (0, 0, {})
    # the idempotency store is forgotten too: the same call is processed afresh
    sim.post([signal()], key="b1", signal_keys=["a"])
    assert sim.stats()["accepted"] == 1 and sim.stats()["duplicates"] == 0


# --- malformed requests ---------------------------------------------------------------


def post_raw(sim: SimClient, body: bytes) -> httpx.Response:
    return sim.http.post("/graphql", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "needs a GraphQL query"),
        (b'{"query": 7}', "needs a GraphQL query"),
        (b'{"query": "mutation {"}', "Syntax Error"),
        (b'{"query": "{ health }"}', "only the createSignals mutation"),
        (b'{"query": "mutation { deleteSignals }"}', "Cannot query field 'deleteSignals'"),
        (
            b'{"query": "mutation($s: [SignalInput!]!) { createSignals(signals: $s) '
            b'{ signalIds } }", "variables": [1]}',
            "variables must be an object",
        ),
        (
            b'{"query": "mutation($s: [SignalInput!]!) { createSignals(signals: $s) '
            b'{ signalIds } }", "variables": {"s": {"appKey": "x"}}}',
            "must be a list",
        ),
        (
            b'{"query": "mutation($s: String) { createSignals(signals: $s) { signalIds } }"}',
            "Variable '$s' of type 'String' used in position expecting type",
        ),
        (
            b'{"query": "mutation A { createSignals(signals: []) { signalIds } } '
            b'mutation B { createSignals(signals: []) { signalIds } }"}',
            "operationName is required",
        ),
    ],
    ids=lambda v: v[:40] if isinstance(v, bytes) else None,
)
def test_malformed_requests_get_400(sim: SimClient, payload: bytes, message: str) -> None:
    response = post_raw(sim, payload)
    assert response.status_code == 400, response.text
    messages = " ".join(e["message"] for e in response.json()["errors"])
    assert message in messages
    assert sim.stats()["accepted"] == 0


def test_operation_name_and_aliases_are_honoured(sim: SimClient) -> None:
    query = (
        "mutation A($s: [SignalInput!]!) { first: createSignals(signals: $s) { ids: signalIds } }"
        " mutation B($s: [SignalInput!]!) { createSignals(signals: $s) { signalIds __typename } }"
    )
    payload: dict[str, Any] = {"query": query, "variables": {"s": [signal()]}}
    a = sim.http.post("/graphql", json={**payload, "operationName": "A"}).json()
    b = sim.http.post("/graphql", json={**payload, "operationName": "B"}).json()
    assert list(a["data"]) == ["first"] and list(a["data"]["first"]) == ["ids"]
    assert b["data"]["createSignals"]["__typename"] == "CreateSignalsResult"
    assert sim.stats()["accepted"] == 2


def test_the_pipelines_request_is_accepted(sim: SimClient) -> None:
    """Exactly what pipeline.connect.document builds, byte for byte."""
    from pipeline.connect.document import request_body

    response = post_raw(sim, request_body([signal(), signal("order")]))
    assert response.status_code == 200 and "errors" not in response.json()
