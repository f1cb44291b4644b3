"""Connections between parts: settings reach the clients they configure, every label
the Connect client emits is a metric label."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.config import load_settings
from pipeline.connect.client import (
    CLIENT_ERROR,
    NETWORK_ERROR,
    TIMEOUT,
    Batch,
    Verdict,
    encode_signal,
)
from pipeline.kafka.runner import build_clients
from pipeline.ops.metrics import CALL_OUTCOMES, TRANSIENT_OUTCOMES, PipelineMetrics

ACCEPTED = b'{"data":{"createSignals":{"signalIds":["x"]}}}'


class SlowForMany(ThreadingHTTPServer):
    """Answers 504 (a gateway timeout) to calls of several signals, accepts lone ones."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                size = self.headers["signal-idempotency-keys"].count(",") + 1
                server.sizes.append(size)
                status, body = (504, b"") if size > 1 else (200, ACCEPTED)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def slow_for_many() -> Iterator[SlowForMany]:
    server = SlowForMany()
    yield server
    server.shutdown()
    server.server_close()


def _batch(n: int) -> Batch:
    keys = [f"k{i}" for i in range(n)]
    return Batch(keys, [encode_signal({"n": i}) for i in range(n)], list(range(n)))


@pytest.mark.parametrize(("setting", "sizes"), [(1, [2, 1, 1]), (3, [2, 2, 2, 1, 1])])
def test_split_after_timeouts_reaches_the_client_built_from_settings(slow_for_many, setting, sizes):
    settings = load_settings(
        topics=["t"],
        kafka_bootstrap_servers="127.0.0.1:1",  # never contacted: only the HTTP client is used
        connect_url=f"http://127.0.0.1:{slow_for_many.server_port}/graphql",
        split_after_timeouts=setting,
        retry_initial_backoff_ms=1,
        retry_max_backoff_ms=1,
    )
    clients = build_clients(
        settings,
        bounded=False,
        on_stats=lambda stats: None,
        on_call=lambda outcome, seconds, signals: None,
        on_failing=lambda failing: None,
        stop=threading.Event(),
    )
    try:
        report = clients.connect.deliver(_batch(2))
    finally:
        clients.connect.close()
        clients.consumer.close()
    assert report.rejected == {} and not report.abandoned
    assert slow_for_many.sizes == sizes
    assert report.slow_splits == 1


def test_every_outcome_the_client_emits_is_a_call_outcome():
    emitted = {str(verdict) for verdict in Verdict} | {TIMEOUT, NETWORK_ERROR, CLIENT_ERROR}
    assert emitted <= set(CALL_OUTCOMES)
    # every outcome after which the client sends again counts as a retry
    again = {"retryable", "unknown", "accepted_some", TIMEOUT, NETWORK_ERROR, CLIENT_ERROR}
    assert again == TRANSIENT_OUTCOMES


@pytest.mark.parametrize("outcome", ["unknown", "accepted_some", "error"])
def test_retries_count_unreadable_answers_partial_acceptance_and_errors(outcome):
    metrics = PipelineMetrics()
    metrics.observe_call(outcome, 0.01, 3)
    page = metrics.exposition().decode()
    assert "connect_signals_api_retries_total 1.0" in page
    assert f'connect_signals_api_calls_total{{outcome="{outcome}"}} 1.0' in page
