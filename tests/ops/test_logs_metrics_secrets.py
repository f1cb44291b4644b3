"""`connect-pipeline run` for real (broker, simulator over HTTP): JSON logs, the metrics
page, and every secret kept out of logs, dead-letter records and the metrics page."""

from __future__ import annotations

import json
import signal
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from devtools.clickstream import clickstream
from devtools.stack import free_port

from tests.integration.consumer_harness import new_topics, produce, read_topic, wait_for
from tests.ops.ops_harness import probe, run_process, scrape, value

pytestmark = pytest.mark.integration

M = "connect_signals_"


def _markers() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {
        "api_key": f"ApiKeyMarker{tag}",
        "wrong_api_key": f"WrongKeyMarker{tag}",
        "app_key": f"AppKeyMarker{tag}",
        "sasl_password": f"SaslPwMarker{tag}",
        "registry_password": f"RegistryPwMarker{tag}",
    }


def _env(bootstrap: str, topic: str, dlq: str, url: str, port: int, secrets: dict[str, str]):
    return {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PIPELINE_TOPICS": topic,
        "PIPELINE_DLQ_TOPIC": dlq,
        "PIPELINE_GROUP_ID": f"group-{topic}",
        "PIPELINE_CONNECT_URL": url,
        "PIPELINE_DEFAULT_APP_KEY": secrets["app_key"],
        "PIPELINE_KAFKA_SASL_USERNAME": "user",
        "PIPELINE_KAFKA_SASL_PASSWORD": secrets["sasl_password"],
        # never contacted (events are single-object encoded), but configured
        "PIPELINE_SCHEMA_REGISTRY_URL": "http://127.0.0.1:9",
        "PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH": f"registry-user:{secrets['registry_password']}",
        "PIPELINE_KAFKA_CONFIG": json.dumps({"statistics.interval.ms": "500"}),
        "PIPELINE_SESSION_TIMEOUT_MS": "6000",
        "PIPELINE_LINGER_MS": "20",
        "PIPELINE_RETRY_INITIAL_BACKOFF_MS": "20",
        "PIPELINE_RETRY_MAX_BACKOFF_MS": "300",
        "PIPELINE_COMMIT_INTERVAL_MS": "200",
        "PIPELINE_DRAIN_TIMEOUT_S": "2",
        "PIPELINE_HTTP_PORT": str(port),
        "PIPELINE_LOG_LEVEL": "DEBUG",
    }


def _json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines if line.startswith("{")]
    # run's last words are a plain summary line for the person who started it
    plain = [line for line in lines if not line.startswith("{")]
    assert len(plain) <= 1, plain[:5]
    return parsed


def test_run_logs_json_exposes_metrics_and_never_prints_a_secret(kafka_bootstrap, tmp_path):
    from connect_sim.testing import run_simulator

    secrets = _markers()
    start = datetime.now(UTC) - timedelta(minutes=5)
    events = list(clickstream(240, seed=23, invalid_ratio=0.08, v1_ratio=0.1, start=start))
    # A producer that put the app key where a currency goes: the rejection quotes the
    # value, and the dead-letter header must not carry it.
    at = next(
        i
        for i, e in enumerate(events)
        if not e.invalid and e.edition == 2 and "currency" in e.record
    )
    leaky = replace(events[at], record={**events[at].record, "currency": secrets["app_key"]})
    events[at] = leaky = replace(leaky, invalid="bad_currency")
    invalid = [e for e in events if e.invalid]
    assert invalid
    topic, dlq = new_topics(kafka_bootstrap)
    produce(kafka_bootstrap, topic, events)
    port = free_port()
    outputs: list[str] = []

    with run_simulator(api_key=secrets["api_key"], app_keys=[secrets["app_key"]]) as sim:
        env = _env(kafka_bootstrap, topic, dlq, sim.graphql_url, port, secrets)

        # Phase 1: the right key; everything is delivered or dead-lettered.
        good = run_process({**env, "PIPELINE_CONNECT_API_KEY": secrets["api_key"]}, tmp_path / "a")
        try:
            expected = len(events) - len(invalid)

            def finished() -> bool:
                try:
                    s = scrape(port)
                except Exception:
                    return False
                dead = value(s, M + "events_dead_lettered_total", reason="validation")
                return value(s, M + "events_delivered_total") == expected and dead == len(invalid)

            wait_for(finished, 60, "phase 1 delivered and dead-lettered everything")
            wait_for(lambda: probe(port, "/readyz")[0] == 200, 15, "ready")

            def lag_known() -> bool:
                lags = [k for k in scrape(port) if k[0] == M + "consumer_lag"]
                return len(lags) == 3

            # librdkafka knows the lag once it has both a committed offset and a watermark
            wait_for(lag_known, 15, "consumer lag of each partition")
            samples = scrape(port)
            outputs.append(_page(port))
            outputs.append(json.dumps(probe(port, "/readyz")[1]))
        finally:
            good.send_signal(signal.SIGTERM)
            assert good.wait(30) == 0

        assert value(samples, M + "events_consumed_total") == len(events)
        assert value(samples, M + "events_skipped_total") == 0
        assert value(samples, M + "events_dropped_total") == 0
        calls_ok = value(samples, M + "api_calls_total", outcome="ok")
        assert calls_ok and calls_ok >= 1
        assert value(samples, M + "api_calls_total", outcome="retryable") == 0
        # one observation per call; without faults every signal travelled exactly once
        assert value(samples, M + "batch_size_signals_count") == calls_ok
        assert value(samples, M + "batch_size_signals_sum") == expected
        assert value(samples, M + "api_call_duration_seconds_count") == calls_ok
        e2e_count = value(samples, M + "end_to_end_latency_seconds_count")
        assert e2e_count and 1 <= e2e_count <= calls_ok
        e2e_sum = value(samples, M + "end_to_end_latency_seconds_sum")
        assert e2e_sum is not None and e2e_sum / e2e_count >= 1  # events are minutes old
        assert value(samples, M + "in_flight_batches") == 0
        assert value(samples, M + "buffered_bytes") == 0
        assert value(samples, M + "assigned_partitions") == 3
        assert value(samples, M + "paused_partitions") == 0
        assert value(samples, M + "api_failing") == 0
        lags = {
            dict(k[1])["partition"]: v for k, v in samples.items() if k[0] == M + "consumer_lag"
        }
        assert sorted(lags) == ["0", "1", "2"]
        assert all(v >= 0 for v in lags.values())
        assert all(dict(k[1])["topic"] == topic for k in samples if k[0] == M + "consumer_lag")

        # Phase 2: a wrong API key: 401s are retried, never dead-lettered; not ready.
        # First 20 events Connect already has (produced again), then new ones.
        again = [e for e in events if not e.invalid][:20]
        more = list(clickstream(30, seed=24, invalid_ratio=0, start=start))
        produce(kafka_bootstrap, topic, again + more)
        port = free_port()  # a fresh one: the first may be taken since
        env["PIPELINE_HTTP_PORT"] = str(port)
        bad = run_process(
            {**env, "PIPELINE_CONNECT_API_KEY": secrets["wrong_api_key"]}, tmp_path / "b"
        )
        try:

            def refused() -> bool:
                try:
                    s = scrape(port)
                except Exception:
                    return False
                return (value(s, M + "api_calls_total", outcome="retryable") or 0) >= 2

            wait_for(refused, 60, "401s counted as retryable calls")
            status, body = probe(port, "/readyz")
            assert status == 503 and body["api_ok"] is False
            assert probe(port, "/healthz")[0] == 200  # an outage is no reason to restart
            retried = scrape(port)
            # The 20 are upstream duplicates at new offsets: after a restart the ledger holds
            # the tail the committed offset can re-read (docs/idempotency.md) - with one
            # record per batch that may include them - so some or all may be skipped; the
            # 30 new events never are (the ledger tests cover exact skips).
            assert (value(retried, M + "events_skipped_total") or 0) <= len(again)
            assert (value(retried, M + "api_retries_total") or 0) >= 1
            assert value(retried, M + "api_failing") == 1
            assert value(retried, M + "events_dead_lettered_total", reason="api_rejected") == 0
            outputs.append(_page(port))
            outputs.append(json.dumps(body))
        finally:
            bad.send_signal(signal.SIGTERM)
            assert bad.wait(30) == 0

    dead = read_topic(kafka_bootstrap, dlq, len(invalid))
    assert len(dead) == len(invalid)
    masked = [
        m
        for m in dead
        if b"currency: '**********'" in dict(m.headers())["__connect.errors.exception.message"]
    ]
    assert len(masked) == 1
    for record in dead:
        outputs.append(repr(record.headers()))
        if leaky.event_id.encode() not in record.value():  # its bytes are the producer's own
            outputs.append(repr(record.key()) + repr(record.value()))

    logs = []
    for name in ("a", "b"):
        for suffix in (".out", ".err"):
            text = (tmp_path / name).with_suffix(suffix).read_text()
            outputs.append(text)
            if suffix == ".err":
                logs.extend(_json_lines(text))

    # Secrets: nowhere, in any output.
    everything = "\n".join(outputs)
    for name, secret in secrets.items():
        assert secret not in everything, f"{name} leaked"

    # Event-level lines name the event: topic, partition, offset, signal type, event id.
    lines = [r for r in logs if r.get("event") == "dead-lettered"]
    assert {r["event_id"] for r in lines} == {e.event_id for e in invalid}
    by_id = {e.event_id: e for e in invalid}
    for line in lines:
        assert line["topic"] == topic and line["level"] == "info"
        assert isinstance(line["partition"], int) and isinstance(line["offset"], int)
        assert line["signal_type"] == by_id[line["event_id"]].signal_type
        assert line["reason"] == "validation" and line["timestamp"].endswith("Z")
    assert any(r.get("event") == "partitions assigned" for r in logs)


def _page(port: int) -> str:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
