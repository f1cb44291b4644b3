"""ConnectClient's HTTP path against a real server on 127.0.0.1: what each call carries,
one kept-alive connection for successive calls, and a timeout classified as one; the
lean transport (http.client) where httpx would connect directly, over http and https:
connections the server closed or left idle too long replaced, an answer cut short a
network error, a compressed answer decoded."""

from __future__ import annotations

import gzip
import http.client
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from devtools.stack import loopback_http

from pipeline.connect.client import (
    NETWORK_ERROR,
    TIMEOUT,
    Batch,
    ConnectClient,
    RetryPolicy,
    batch_body,
    batch_key,
    sf_list,
    sf_string,
)
from pipeline.connect.wire import LeanTransport
from tests.certificates import self_signed

ACCEPTED = b'{"data":{"createSignals":{"signalIds":null}}}'


@dataclass
class Seen:
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)  # client (host, port)
    hold: threading.Event | None = None  # set: answer; unset: keep the caller waiting


def _handler(seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            seen.headers.append({k.lower(): v for k, v in self.headers.items()})
            seen.bodies.append(body)
            seen.peers.add(self.client_address)
            if seen.hold is not None:
                seen.hold.wait(5)
            self.send_response(200)
            self.send_header("content-length", str(len(ACCEPTED)))
            self.end_headers()
            self.wfile.write(ACCEPTED)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def server(seen: Seen) -> Iterator[str]:
    with loopback_http(_handler(seen)) as base:
        try:
            yield f"{base}/graphql"
        finally:
            if seen.hold is not None:
                seen.hold.set()


def batch(prefix: str, n: int = 3) -> Batch:
    keys = [f"{prefix}-{i}" for i in range(n)]
    return Batch(keys, [b'{"k":"%s"}' % k.encode() for k in keys], list(range(n)))


def client(url: str, stop: threading.Event, **kwargs: object) -> ConnectClient:
    return ConnectClient(
        url,
        "X-API-Key",
        "secret",
        timeout_s=kwargs.pop("timeout_s", 5.0),  # type: ignore[arg-type]
        max_connections=2,
        retry=RetryPolicy(initial_backoff_s=0.01),
        stop=stop,
        **kwargs,  # type: ignore[arg-type]
    )


def test_each_call_carries_the_body_keys_and_configured_headers_on_one_connection() -> None:
    seen = Seen()
    with server(seen) as url:
        connect = client(url, threading.Event())
        batches = [batch("a"), batch("b")]
        reports = [connect.deliver(b) for b in batches]
        connect.close()
    assert [(r.calls, r.rejected, r.abandoned) for r in reports] == [(1, {}, False)] * 2
    assert seen.bodies == [batch_body(b.fragments) for b in batches]
    for headers, sent in zip(seen.headers, batches, strict=True):
        assert headers["x-api-key"] == "secret"
        assert headers["content-type"] == "application/json"
        assert headers["idempotency-key"] == sf_string(batch_key(sent.keys))
        assert headers["signal-idempotency-keys"] == sf_list(sent.keys)
    assert len(seen.peers) == 1  # the second call reused the first one's connection


def test_a_call_past_the_timeout_is_classified_as_a_timeout() -> None:
    seen = Seen(hold=threading.Event())
    stop = threading.Event()
    outcomes: list[str] = []

    def on_call(kind: str, seconds: float, signals: int) -> None:
        outcomes.append(kind)
        stop.set()  # one attempt is enough: the delivery then gives up

    with server(seen) as url:
        connect = client(url, stop, timeout_s=0.2, on_call=on_call)
        report = connect.deliver(batch("slow"))
        connect.close()
    assert outcomes == [TIMEOUT]
    assert report.abandoned and report.calls == 1


@contextmanager
def scripted(answers: list[bytes], peers: list[tuple[str, int]]) -> Iterator[str]:
    """A server that writes each call's raw answer (status line on) in turn, then
    keeps or closes the connection as the answer's headers say (or closes it after an
    answer cut short)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            peers.append(self.client_address)
            answer = answers.pop(0)
            self.wfile.write(answer)
            self.wfile.flush()
            if b"connection: close" in answer.lower() or b"short" in answer:
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    with loopback_http(Handler) as base:
        yield f"{base}/graphql"


def _answer(body: bytes, *headers: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    lines = [b"HTTP/1.1 200 OK", b"content-length: %d" % size, *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_the_lean_transport_serves_plain_http_and_stands_aside_for_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stop = threading.Event()
    direct = client("http://127.0.0.1:9/graphql", stop)
    assert isinstance(direct._transport, LeanTransport)
    direct.close()
    tls = client("https://connect.example/graphql", stop)  # httpx's own context: CA bundle
    assert isinstance(tls._transport, LeanTransport)
    assert tls._transport._context is tls._pool._pool._ssl_context  # type: ignore[attr-defined]
    tls.close()
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    proxied = client("http://connect.example/graphql", stop)
    assert not isinstance(proxied._transport, LeanTransport)  # httpx's proxy transport
    proxied.close()


def test_a_connection_the_server_closed_is_not_reused_and_no_call_is_retried() -> None:
    peers: list[tuple[str, int]] = []
    answers = [
        _answer(ACCEPTED, b"connection: close"),  # said so
        _answer(ACCEPTED),  # kept ...
        _answer(ACCEPTED),  # ... and reused
    ]
    outcomes: list[str] = []
    with scripted(answers, peers) as url:
        connect = client(url, threading.Event(), on_call=lambda k, s, n: outcomes.append(k))
        reports = [connect.deliver(batch(p)) for p in "abc"]
        connect.close()
    assert [(r.calls, r.retries, r.rejected) for r in reports] == [(1, 0, {})] * 3
    assert outcomes == ["ok"] * 3
    assert len(set(peers)) == 2 and peers[1] == peers[2]


def test_an_idle_connection_past_the_keepalive_expiry_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.connect.wire as module

    peers: list[tuple[str, int]] = []
    with scripted([_answer(ACCEPTED)] * 3, peers) as url:
        connect = client(url, threading.Event())
        connect.deliver(batch("a"))
        connect.deliver(batch("b"))
        monkeypatch.setattr(module, "KEEPALIVE_EXPIRY_S", 0.0)
        connect.deliver(batch("c"))
        connect.close()
    assert peers[0] == peers[1] != peers[2]


def test_an_answer_cut_short_is_a_network_error_retried_on_a_new_connection() -> None:
    peers: list[tuple[str, int]] = []
    answers = [_answer(ACCEPTED[:10] + b" short", length=len(ACCEPTED) + 50), _answer(ACCEPTED)]
    outcomes: list[str] = []
    with scripted(answers, peers) as url:
        connect = client(url, threading.Event(), on_call=lambda k, s, n: outcomes.append(k))
        report = connect.deliver(batch("a"))
        connect.close()
    assert outcomes == [NETWORK_ERROR, "ok"]
    assert (report.calls, report.retries, report.rejected) == (2, 1, {})
    assert len(set(peers)) == 2


def test_a_compressed_answer_is_decoded_as_httpx_would() -> None:
    rejected = b'{"data":null,"errors":[{"message":"bad","extensions":{"index":1}}]}'
    peers: list[tuple[str, int]] = []
    answers = [_answer(gzip.compress(rejected), b"content-encoding: gzip"), _answer(ACCEPTED)]
    with scripted(answers, peers) as url:
        connect = client(url, threading.Event())
        report = connect.deliver(batch("a"))
        connect.close()
    assert report.rejected == {1: "bad"}  # read: index 1 rejected, the rest sent again
    assert report.calls == 2


def test_https_goes_the_lean_way_with_the_clients_context(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    seen = Seen()
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert, key)
    listening = ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    listening.daemon_threads = True
    listening.socket = serving.wrap_socket(listening.socket, server_side=True)
    thread = threading.Thread(target=listening.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{listening.server_address[1]}/graphql"
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        connect = client(url, threading.Event(), verify=trusting)
        assert isinstance(connect._transport, LeanTransport)
        reports = [connect.deliver(batch(p)) for p in "ab"]
        connect.close()
        untrusting = client(url, threading.Event(), verify=True)
        outcomes: list[str] = []
        untrusting._on_call = lambda kind, s, n: outcomes.append(kind)
        untrusting._stop.set()  # one attempt
        refused = untrusting.deliver(batch("c"))
        untrusting.close()
    finally:
        listening.shutdown()
        listening.server_close()
        thread.join()
    assert [(r.calls, r.rejected) for r in reports] == [(1, {})] * 2
    assert len(seen.bodies) == 2 and len(seen.peers) == 1
    assert outcomes == [NETWORK_ERROR] and refused.abandoned  # the certificate is not trusted


def test_an_answer_before_the_server_stopped_reading_is_read_as_httpx_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that answers 413 to a large body without reading it: writing the body
    fails, the answer is read all the same (the batch split, not retried as is)."""
    peers: list[tuple[str, int]] = []
    too_large = _answer(b"", b"connection: close").replace(b"200 OK", b"413 Payload Too Large")
    answers = [too_large, _answer(ACCEPTED), _answer(ACCEPTED)]
    send = http.client.HTTPConnection.send

    def refused_body(self: http.client.HTTPConnection, data: bytes) -> None:
        if len(data) > 20_000 and answers[0] is too_large:
            raise BrokenPipeError(32, "Broken pipe")  # the server stopped reading
        send(self, data)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            peers.append(self.client_address)
            answer = answers.pop(0)
            if answer is not too_large:
                self.rfile.read(int(self.headers["content-length"]))
            else:
                self.close_connection = True
            self.wfile.write(answer)
            self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    monkeypatch.setattr(http.client.HTTPConnection, "send", refused_body)
    big = Batch(["a", "b"], [b'{"k":"%s"}' % (b"x" * 15_000)] * 2, [0, 1])
    with loopback_http(Handler) as base:
        connect = client(f"{base}/graphql", threading.Event())
        report = connect.deliver(big)
        connect.close()
    assert (report.calls, report.retries, report.rejected) == (3, 0, {})  # 413: split in two
    assert not answers
