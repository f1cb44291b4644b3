"""OpenTelemetry traces: spans reach a real OTLP/HTTP endpoint (a stand-in collector),
continuing the producer's traceparent; without tracing every hook is a no-op."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.ops import tracing

PRODUCER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER_SPAN = "b7ad6b7169203331"


class Collector(ThreadingHTTPServer):
    """Answers OTLP/HTTP trace exports like a collector and keeps the requests."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        self.received = threading.Event()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.bodies.append((self.path, body))
                collector.received.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def _spans(bodies: list[tuple[str, bytes]]):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    for _, body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    yield attrs, span


@pytest.fixture
def collector(monkeypatch):
    server = Collector()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "pipeline-under-test")
    yield server
    tracing.shutdown()
    server.shutdown()
    server.server_close()


def test_spans_reach_an_otlp_collector_and_continue_the_producers_trace(collector):
    traced = [("traceparent", f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01".encode())]
    other = [("traceparent", f"00-{OTHER_TRACE}-{OTHER_SPAN}-01")]
    assert tracing.configure(True) and tracing.enabled()
    with tracing.batch_call(3, 2_048, [traced, other, None]) as span:
        tracing.set_outcome(span, "ok", accepted=3)
    tracing.dead_letter("validation", "email", "clicks", 2, 41, traced)
    tracing.shutdown()  # flushes: the export happens before it returns
    assert collector.received.is_set()
    assert {path for path, _ in collector.bodies} == {"/v1/traces"}
    spans = {span.name: (attrs, span) for attrs, span in _spans(collector.bodies)}
    assert set(spans) == {"createSignals", "dead-letter"}

    resource, call = spans["createSignals"]
    assert resource["service.name"] == "pipeline-under-test"
    linked = {(link.trace_id.hex(), link.span_id.hex()) for link in call.links}
    assert linked == {(PRODUCER_TRACE, PRODUCER_SPAN), (OTHER_TRACE, OTHER_SPAN)}
    attributes = {a.key: a.value for a in call.attributes}
    assert attributes["connect.signals.count"].int_value == 3
    assert attributes["connect.signals.outcome"].string_value == "ok"

    _, dead = spans["dead-letter"]
    assert dead.trace_id.hex() == PRODUCER_TRACE  # a child in the producer's trace
    assert dead.parent_span_id.hex() == PRODUCER_SPAN
    reason = {a.key: a.value.string_value for a in dead.attributes}["connect.signals.reason"]
    assert reason == "validation"


def test_off_by_default_every_hook_is_a_no_op(collector):
    assert tracing.configure(False) is False and not tracing.enabled()
    with tracing.batch_call(1, 10, [[("traceparent", b"garbage")]]) as span:
        tracing.set_outcome(span, "retryable")
    tracing.dead_letter("undecodable", "", "t", 0, 0, None)
    tracing.shutdown()
    assert collector.bodies == []


def test_asking_for_tracing_without_the_extra_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ImportError, match=r"the 'otel' extra"):
        tracing.configure(True)
    assert not tracing.enabled()
