"""ConnectClient's HTTP path against a real server on 127.0.0.1: what each call carries,
one kept-alive connection for successive calls, and a timeout classified as one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from devtools.stack import loopback_http

from pipeline.connect.client import (
    TIMEOUT,
    Batch,
    ConnectClient,
    RetryPolicy,
    batch_body,
    batch_key,
    sf_list,
    sf_string,
)

ACCEPTED = b'{"data":{"createSignals":{"signalIds":null}}}'


@dataclass
class Seen:
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)  # client (host, port)
    hold: threading.Event | None = None  # set: answer; unset: keep the caller waiting


@contextmanager
def server(seen: Seen) -> Iterator[str]:
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

    with loopback_http(Handler) as base:
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
