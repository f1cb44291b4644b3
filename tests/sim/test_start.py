"""Starting the simulator: command-line options and CONNECT_SIM_* environment."""

from __future__ import annotations

import httpx
import pytest
from connect_sim.__main__ import config_from, parse_args
from connect_sim.testing import run_simulator

from tests.sim.conftest import CREATE_SIGNALS, signal


def test_start_options_over_http() -> None:
    args = [
        "--auth-header", "X-Api-Key", "--auth-scheme", "",
        "--no-idempotency", "--seed", "3", "--rate-limit-burst", "1", "--retry-after", "1",
    ]  # fmt: skip
    with run_simulator("k-1", ["app-1"], args) as sim:
        body = {
            "query": CREATE_SIGNALS,
            "variables": {"signals": [{**signal(), "appKey": "app-1"}]},
        }
        headers = {"X-Api-Key": "k-1", "Idempotency-Key": '"b-1"'}
        limited = httpx.post(sim.graphql_url, json=body, headers=headers)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        bearer = httpx.post(sim.graphql_url, json=body, headers={"authorization": "Bearer k-1"})
        assert bearer.status_code == 401
        for _ in range(2):
            assert httpx.post(sim.graphql_url, json=body, headers=headers).status_code == 200
        assert sim.stats()["accepted"] == 2  # idempotency is off: the repeat is recorded
        assert httpx.get(f"{sim.base_url}/admin/faults").json()["seed"] == 3
        assert httpx.get(f"{sim.base_url}/admin/idempotency").json()["enabled"] is False


def test_environment_configures_every_option(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PORT": "9999", "API_KEY": "env-key", "AUTH_HEADER": "X-Key", "AUTH_SCHEME": "",
        "APP_KEYS": "a, b", "NO_IDEMPOTENCY": "1", "IDEMPOTENCY_TTL": "5", "SEED": "4",
        "ERROR_RATE": "0.1", "RATE_LIMIT_RATE": "0.2", "RATE_LIMIT_BURST": "2",
        "RETRY_AFTER": "3", "LATENCY_MS": "4", "LATENCY_JITTER_MS": "5",
        "DROP_CONNECTION_RATE": "0.3",
        "DROP_AFTER_PROCESSING_RATE": "0.4", "TIMEOUT_RATE": "0.5", "TIMEOUT_S": "6",
        "REJECT_WHOLE_BATCH": "true", "GRAPHQL_ERROR_RATE": "0.6", "GRAPHQL_ERROR_CODE": "X",
        "MALFORMED_RATE": "0.7", "MALFORMED_SHAPE": "empty", "PROXY_407_RATE": "0.8",
        "GATEWAY_TIMEOUT_RATE": "0.9", "GATEWAY_TIMEOUT_OVER_SIGNALS": "7", "BURST": "8",
        "BURST_FAULT": "407",
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(f"CONNECT_SIM_{name}", value)
    args = parse_args([])
    config = config_from(args)
    assert args.port == 9999
    assert (config.api_key, config.auth_header, config.expected_auth) == (
        "env-key",
        "X-Key",
        b"env-key",
    )
    assert config.app_keys == frozenset({"a", "b"})
    assert (config.idempotency, config.idempotency_ttl_s) == (False, 5)
    f = config.faults
    assert (f.seed, f.error_rate, f.rate_limit_rate, f.rate_limit_burst) == (4, 0.1, 0.2, 2)
    assert (f.retry_after_s, f.latency_ms, f.latency_jitter_ms) == (3, 4, 5)
    assert (f.drop_connection_rate, f.drop_after_processing_rate) == (0.3, 0.4)
    assert (f.timeout_rate, f.timeout_s, f.reject_whole_batch) == (0.5, 6, True)
    assert (f.graphql_error_rate, f.graphql_error_code) == (0.6, "X")
    assert (f.malformed_rate, f.malformed_shape, f.proxy_407_rate) == (0.7, "empty", 0.8)
    assert (f.gateway_timeout_rate, f.gateway_timeout_over_signals) == (0.9, 7)
    assert (f.burst, f.burst_fault) == (8, "407")


def test_command_line_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECT_SIM_API_KEY", "env-key")
    config = config_from(parse_args(["--api-key", "cli-key"]))
    assert (config.auth_header, config.expected_auth) == ("X-API-Key", b"cli-key")


def test_the_old_authorization_bearer_header_when_configured() -> None:
    args = ["--auth-header", "Authorization", "--auth-scheme", "Bearer"]
    with run_simulator("k-2", ["app-2"], args) as sim:
        body = {
            "query": CREATE_SIGNALS,
            "variables": {"signals": [{**signal(), "appKey": "app-2"}]},
        }
        bearer = httpx.post(sim.graphql_url, json=body, headers={"authorization": "Bearer k-2"})
        assert bearer.status_code == 200
        bare = httpx.post(sim.graphql_url, json=body, headers={"x-api-key": "k-2"})
        assert bare.status_code == 401
