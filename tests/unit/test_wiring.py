"""Connections between parts: settings reach the clients they configure, every label
the Connect client emits is a metric label."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from confluent_kafka import KafkaError

from pipeline.config import load_settings
from pipeline.connect.client import (
    CLIENT_ERROR,
    NETWORK_ERROR,
    TIMEOUT,
    Batch,
    Verdict,
    encode_signal,
)
from pipeline.kafka.dead_letter_writer import DeadLetterWriter
from pipeline.kafka.dead_letters import DeadLetterUnwritable
from pipeline.kafka.partition_state import Partitions
from pipeline.kafka.producer_sink import ProducerSink
from pipeline.kafka.records import Pending, RecordOrigin
from pipeline.kafka.runner import build_clients
from pipeline.ops.metrics import (
    CALL_OUTCOMES,
    TRANSIENT_OUTCOMES,
    PipelineMetrics,
    committed_lags,
)
from pipeline.signals.outcomes import Reason, Rejection
from tests.unit.kafka.fakes import FakeProducer, pending

UNDECODABLE = Rejection.single(Reason.UNDECODABLE, "", "not Avro")
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


# --- the metrics the alerts read --------------------------------------------------------


def _stats(**partition: Any) -> dict[str, Any]:
    base = {"fetch_state": "active", "hi_offset": 120, "ls_offset": 100, "committed_offset": -1001}
    return {"topics": {"clicks": {"partitions": {"0": {**base, **partition}, "-1": {}}}}}


def test_committed_lag_is_the_last_stable_offset_minus_the_last_landed_commit():
    assert dict(committed_lags(_stats(), {("clicks", 0): 60})) == {("clicks", "0"): 40}
    # none landed in this process yet: librdkafka's committed offset, else nothing
    assert dict(committed_lags(_stats(committed_offset=90), {})) == {("clicks", "0"): 10}
    assert dict(committed_lags(_stats(), {})) == {}
    # a read_uncommitted end (no stable offset): the high watermark
    assert dict(committed_lags(_stats(ls_offset=-1), {("clicks", 0): 60})) == {("clicks", "0"): 60}
    assert dict(committed_lags(_stats(fetch_state="stopped"), {("clicks", 0): 60})) == {}


def test_committed_lag_ledger_evictions_and_dead_letter_write_failures_are_exported():
    metrics = PipelineMetrics()
    committed = {("clicks", 0): 60}
    evicted = [0]
    metrics.watch(
        in_flight=lambda: 0,
        buffered_bytes=lambda: 0,
        assigned=lambda: 1,
        paused=lambda: 0,
        api_failing=lambda: 0,
        ledger_evicted=lambda: evicted[0],
        committed=lambda: committed,
    )
    metrics.on_statistics(_stats())
    evicted[0] = 7  # read when scraped
    metrics.dead_letter_write_failures.inc()
    page = metrics.exposition().decode()
    assert 'connect_signals_committed_lag{partition="0",topic="clicks"} 40.0' in page
    assert "connect_signals_ledger_evicted_total 7.0" in page
    assert "connect_signals_dead_letter_write_failures_total 1.0" in page
    metrics.on_statistics(_stats(fetch_state="stopped"))  # revoked: the series goes
    assert "connect_signals_committed_lag{" not in metrics.exposition().decode()


def _writer(producer: FakeProducer, failures: list[int]) -> tuple[DeadLetterWriter, Pending]:
    writer = DeadLetterWriter(
        ProducerSink(producer, transactional=False),  # type: ignore[arg-type]
        "dlq",
        "group",
        100_000,
        RecordOrigin(),
        finished=lambda pending: None,
        counted=lambda reason, n: None,
        write_failed=lambda: failures.append(1),
    )
    (state,) = Partitions().assign([("clicks", 0)])
    return writer, pending(state, 41, b"x" * 10_000)


def test_dead_letter_write_failures_count_failures_and_refusals_not_a_smaller_retry():
    failures: list[int] = []
    producer = FakeProducer()
    writer, record = _writer(producer, failures)
    writer.write(record, UNDECODABLE)
    producer.calls[0]["on_delivery"](KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    assert failures == []  # written again without the value: handled
    producer.calls[0]["on_delivery"](KafkaError(KafkaError._MSG_TIMED_OUT), None)
    assert failures == [1]
    with pytest.raises(DeadLetterUnwritable):
        producer.calls[0]["on_delivery"](KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), None)
    assert failures == [1, 1]


def test_a_dead_letter_refused_at_produce_counts_as_a_write_failure():
    failures: list[int] = []
    writer, record = _writer(FakeProducer(refuse=1, error=KafkaError._UNKNOWN_TOPIC), failures)
    with pytest.raises(DeadLetterUnwritable):
        writer.write(record, UNDECODABLE)
    assert failures == [1]
