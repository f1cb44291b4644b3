"""/healthz and /readyz flip as the broker and the Connect API go away and come back.

The consumer runs in a thread of this process with the real operations endpoint. The
broker phase stops a broker, so it needs the embedded one: with
PIPELINE_KAFKA_BOOTSTRAP_SERVERS set (a real Apache Kafka), only the API phase runs
against it.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from devtools.broker import EmbeddedBroker
from devtools.clickstream import clickstream
from devtools.stack import external_bootstrap, free_port
from prometheus_client.parser import text_string_to_metric_families

from pipeline.kafka.consumer import SignalConsumer
from pipeline.kafka.runner import build_processor, start_ops_server
from pipeline.ops.health import HealthState
from tests.integration.consumer_harness import (
    API_KEY,
    APP_KEY,
    new_topics,
    produce,
    settings_for,
    wait_for,
)
from tests.ops.ops_harness import probe

pytestmark = pytest.mark.integration


def _until(port: int, path: str, status: int, timeout_s: float, why: str) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        code, body = probe(port, path)
        if code == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never {status} ({why}): last {code} {body}")
        time.sleep(0.2)


def _hold(port: int) -> socket.socket:
    """Keep a stopped server's port: connections are refused, and no other process on
    this busy machine can take it before the server starts again."""
    guard = socket.socket()
    guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    guard.bind(("127.0.0.1", port))
    return guard


def test_probes_follow_the_broker_and_the_api(kafka_bootstrap):
    from connect_sim.testing import run_simulator

    external = external_bootstrap()
    broker = None if external else EmbeddedBroker().start()
    bootstrap = external or broker.bootstrap_servers  # type: ignore[union-attr]
    port = free_port()
    try:
        with run_simulator(api_key=API_KEY, app_keys=[APP_KEY]) as sim:
            topic, dlq = new_topics(bootstrap, partitions=2)
            settings = settings_for(
                bootstrap,
                topic,
                dlq,
                sim.graphql_url,
                http_port=port,
                http_host="127.0.0.1",
                liveness_timeout_s=2.0,
                kafka_config={"statistics.interval.ms": "300", "reconnect.backoff.max.ms": "500"},
                # a fresh in-memory broker forgets producer ids: health is the subject here
                ledger_enabled=False,
                transactions=False,
            )
            consumer = SignalConsumer(settings, build_processor(settings))
            server = start_ops_server(settings, consumer)
            assert server is not None
            thread = threading.Thread(target=consumer.run, daemon=True)
            thread.start()
            try:
                body = _until(port, "/readyz", 200, 30, "joined, broker up, API fine")
                assert body["group_joined"] and body["broker_reachable"] and body["api_ok"]
                assert probe(port, "/healthz")[0] == 200

                # The API goes away while there is work: not ready, still alive.
                sim.stop()
                guard = _hold(sim.port)
                produce(bootstrap, topic, list(clickstream(20, seed=3, invalid_ratio=0)))
                body = _until(port, "/readyz", 503, 30, "API failing")
                assert body["api_ok"] is False and body["broker_reachable"] is True
                assert probe(port, "/healthz")[0] == 200
                guard.close()
                sim.start()  # same port
                _until(port, "/readyz", 200, 30, "the retried batch went through")
                wait_for(lambda: len(sim.signals()) == 20, 30, "the 20 signals delivered")

                if broker is not None:
                    # The broker goes away: not ready, still alive; a new one: ready again.
                    broker.stop()
                    guard = _hold(broker.port)
                    body = _until(port, "/readyz", 503, 30, "broker unreachable")
                    assert body["broker_reachable"] is False
                    assert probe(port, "/healthz")[0] == 200
                    guard.close()
                    broker = EmbeddedBroker(port=broker.port).start()
                    body = _until(port, "/readyz", 200, 30, "broker back")
                    assert body["broker_reachable"] is True
            finally:
                consumer.stop()
                thread.join(30)
            assert not thread.is_alive()
            # The loop has stopped turning: liveness fails once its timeout passes.
            _until(port, "/healthz", 503, 10, "poll loop stopped")
            server.stop()
    finally:
        if broker is not None:
            broker.stop()


def test_liveness_and_readiness_rules():
    failing = False
    state = HealthState(liveness_timeout_s=0.2, stats_max_age_s=0.3, api_failing=lambda: failing)
    assert state.liveness()[0] is True
    assert state.readiness()[0] is False  # no statistics yet, not joined
    state.joined = True
    stats = {
        "brokers": {
            "bootstrap": {"state": "UP", "nodeid": -1},
            "b1": {"state": "UP", "nodeid": 1},
        },
        "cgrp": {"state": "up"},
    }
    state.on_statistics(stats)
    assert state.readiness() == (True, state.readiness()[1])
    failing = True
    ok, details = state.readiness()
    assert not ok and details["api_ok"] is False and details["broker_reachable"] is True
    failing = False
    # the bootstrap placeholder alone says nothing about the cluster
    state.on_statistics({"brokers": {"bootstrap": {"state": "UP", "nodeid": -1}}})
    assert state.readiness()[1]["broker_reachable"] is False
    state.on_statistics(stats)
    time.sleep(0.35)  # statistics stop coming: the broker state is unknown
    assert state.readiness()[1]["broker_reachable"] is False
    assert state.liveness()[0] is False  # and the loop has not beaten for 0.35 s
    state.beat()
    assert state.liveness()[0] is True


def test_ops_server_on_double_colon_answers_ipv6_and_ipv4_with_process_and_build_metrics():
    import confluent_kafka
    import httpx

    from pipeline import __version__
    from pipeline.ops.health import HealthServer
    from pipeline.ops.metrics import CONTENT_TYPE, PipelineMetrics

    metrics = PipelineMetrics()
    server = HealthServer(
        "::", 0, HealthState(), lambda: (metrics.exposition(), CONTENT_TYPE)
    ).start()
    try:
        for base in (f"http://[::1]:{server.port}", f"http://127.0.0.1:{server.port}"):
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200, base
        page = httpx.get(f"http://[::1]:{server.port}/metrics", timeout=5).text
    finally:
        server.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }
    names = {name for name, _ in samples}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= names
    build = {labels: v for (name, labels), v in samples.items() if name.endswith("build_info")}
    [(labels, one)] = build.items()
    assert one == 1
    assert dict(labels)["version"] == __version__
    assert dict(labels)["librdkafka_version"] == confluent_kafka.libversion()[0]


def test_ops_server_on_an_ipv4_address_stays_ipv4():
    from pipeline.ops.health import HealthServer

    server = HealthServer("127.0.0.1", 0, HealthState(), lambda: (b"", "text/plain")).start()
    try:
        assert server.socket.family == socket.AF_INET
        assert probe(server.port, "/healthz")[0] == 200
    finally:
        server.stop()
