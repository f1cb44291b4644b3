"""A plain HTTP server playing Connect that answers the next calls as a test scripts.

Real HTTP on 127.0.0.1 (no simulator, no GraphQL parsing): the signals' keys come
from the ``Signal-Idempotency-Keys`` header. Each scripted call gets its canned
answer and records nothing (or, for ``accept_half``, records the first half of its
signals and says so in ``signalIds`` beside a transient error); every other call is
accepted whole. ``slow_over`` answers 504 to every call of more signals than that.
An answer with ``wire`` set is not a well-formed HTTP answer: ``trickle`` sends its
head a byte every 50 ms, ``endless`` a chunked body that never ends (both for up to
20 s, or until the client hangs up).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from devtools.stack import loopback_http

API_KEY_HEADER = "x-api-key"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    #: record the first half of the call's signals and name them in signalIds
    accept_half: bool = False
    #: "trickle" or "endless": the answer never completes (see the module's doc)
    wire: str = ""


@dataclass
class FaultyConnect:
    url: str = ""
    accepted: Counter[str] = field(default_factory=Counter)  # key -> times accepted
    calls: int = 0
    scripted_served: int = 0
    slow_served: int = 0
    largest_accepted_call: int = 0
    api_keys: set[str] = field(default_factory=set)  # X-API-Key values seen
    slow_over: int = 0  # 504 to calls of more signals than this (0: off)
    _script: deque[Answer] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *answers: Answer) -> None:
        """The next calls get these answers, in order; then normal answers again."""
        with self._lock:
            self._script.extend(answers)
            self.scripted_served = 0

    @property
    def script_left(self) -> int:
        return len(self._script)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.accepted.values() if n > 1)

    def answer(self, keys: list[str], api_key: str | None) -> tuple[int, str, bytes, str]:
        with self._lock:
            self.calls += 1
            self.api_keys.add(api_key or "")
            if self.slow_over and len(keys) > self.slow_over:
                self.slow_served += 1
                return 504, "text/html", b"<html><h1>504 Gateway Time-out</h1></html>", ""
            scripted = self._script.popleft() if self._script else None
            if scripted is not None:
                self.scripted_served += 1
                if not scripted.accept_half:
                    return scripted.status, scripted.content_type, scripted.body, scripted.wire
                half = len(keys) // 2 or 1
                self._accept(keys[:half])
                ids = [f"id-{k}" if i < half else None for i, k in enumerate(keys)]
                error = {"message": "try later", "extensions": {"code": "THROTTLED"}}
                document = {"data": {"createSignals": {"signalIds": ids}}, "errors": [error]}
                return 200, "application/json", json.dumps(document).encode(), ""
            self._accept(keys)
        document = {"data": {"createSignals": {"signalIds": [f"id-{k}" for k in keys]}}}
        return 200, "application/json", json.dumps(document).encode(), ""

    def _accept(self, keys: list[str]) -> None:
        self.accepted.update(keys)
        self.largest_accepted_call = max(self.largest_accepted_call, len(keys))


def _never_complete(wfile: Any, wire: str) -> None:
    ends = time.monotonic() + 20
    if wire == "trickle":
        for byte in b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-padding: ":
            wfile.write(bytes([byte]))
            wfile.flush()
            time.sleep(0.05)
        while time.monotonic() < ends:
            wfile.write(b"x")
            wfile.flush()
            time.sleep(0.05)
        return
    wfile.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65_536, b"{" * 65_536)
    while time.monotonic() < ends:
        wfile.write(chunk)


def _keys(header: str) -> list[str]:
    return [k.strip().strip('"') for k in header.split(",") if k.strip()]


@contextmanager
def faulty_connect() -> Iterator[FaultyConnect]:
    connect = FaultyConnect()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            keys = _keys(self.headers.get("signal-idempotency-keys", ""))
            status, content_type, body, wire = connect.answer(
                keys, self.headers.get(API_KEY_HEADER)
            )
            if wire:
                self.close_connection = True
                with contextlib.suppress(OSError):  # the client hung up: as it should
                    _never_complete(self.wfile, wire)
                return
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with loopback_http(Handler) as base:
        connect.url = f"{base}/graphql"
        yield connect
