"""A plain HTTP server answering createSignals as a test says: accept, fail, or hold.

Real HTTP on 127.0.0.1 (the consumer's httpx client talks to it as to Connect), no
GraphQL parsing: the signals' idempotency keys come from the
``Signal-Idempotency-Keys`` header. ``hold`` keeps every request waiting on an Event
(a stuck batch), ``outage`` answers 503 (a Connect outage); ``decide`` picks an
answer per request (``accept``, ``hold`` until ``gate`` is set, ``fail``: 503,
``reject``: a GraphQL error naming no signal, which makes the client split the batch).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

from devtools.stack import loopback_http


def _keys(header: str) -> list[str]:
    return [k.strip().strip('"') for k in header.split(",") if k.strip()]


class ConnectStub:
    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()  # key -> times accepted
        self.requests = 0
        self.held = 0  # requests waiting right now
        self.outage = threading.Event()  # set: 503 to every request
        self.release = threading.Event()  # cleared: requests wait for it
        self.release.set()
        self.request_arrived = threading.Event()
        self.gate = threading.Event()  # what ``decide`` holds waits for this
        self.decide: Callable[[list[str], int], str] | None = None
        self.sent: list[list[str]] = []  # every request's keys, in arrival order
        self._lock = threading.Lock()
        self.url = ""

    def hold(self) -> None:
        self.release.clear()

    def let_go(self) -> None:
        self.release.set()

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.accepted.values() if n > 1)

    def answer(self, keys: list[str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests += 1
            self.sent.append(keys)
            number = self.requests
            self.held += 1
        self.request_arrived.set()
        action = self.decide(keys, number) if self.decide is not None else "accept"
        if action == "reject":
            with self._lock:
                self.held -= 1
            error = {"message": "bad", "extensions": {"code": "BAD_USER_INPUT"}}
            return 200, {"data": None, "errors": [error]}
        if action == "fail":
            with self._lock:
                self.held -= 1
            return 503, {"errors": [{"message": "unavailable"}]}
        if action == "hold":
            self.gate.wait()
        self.release.wait()
        with self._lock:
            self.held -= 1
            if self.outage.is_set():
                return 503, {"errors": [{"message": "unavailable"}]}
            self.accepted.update(keys)
        return 200, {"data": {"createSignals": {"accepted": len(keys)}}}


@contextmanager
def connect_stub() -> Iterator[ConnectStub]:
    stub = ConnectStub()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            status, document = stub.answer(_keys(self.headers.get("signal-idempotency-keys", "")))
            body = json.dumps(document).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up on this request (an abandoned batch)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with loopback_http(Handler) as base:
        stub.url = f"{base}/graphql"
        try:
            yield stub
        finally:  # held requests answer before the server stops
            stub.let_go()
            stub.gate.set()
