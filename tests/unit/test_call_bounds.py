"""A call is bounded as a whole: answers that never end, or end too slowly.

A socket timeout bounds one read, so a server or proxy that sends a byte now and then
would hold a delivery thread for ever, and an endless body would fill its memory.
A real TCP server on 127.0.0.1 answers the first call with each hostile shape and the
second normally; the first attempt must end within the timeout (plus slack) as a
timeout or a network error, and the batch is then delivered on a new connection.
Each shape goes the lean way (direct) and httpx's way (through a proxy: the same
server, which ignores the request line's absolute URL).
"""

from __future__ import annotations

import gzip
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from pipeline.connect.client import NETWORK_ERROR, TIMEOUT
from pipeline.connect.wire import MAX_ANSWER_BYTES, LeanTransport
from tests.unit.test_client_http import ACCEPTED, batch, client

TIMEOUT_S = 0.5
#: How long a hostile answer goes on at most if nothing stops it.
HOSTILE_FOR_S = 20.0
Behaviour = Callable[[socket.socket], None]


def _read_request(rfile: socketserver.StreamRequestHandler) -> bool:
    length = 0
    while (line := rfile.rfile.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if line == b"":
        return False
    rfile.rfile.read(length)
    return True


def accepted(sock: socket.socket) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(ACCEPTED), ACCEPTED))


def _trickle(sock: socket.socket, head: bytes) -> None:
    sock.sendall(head)
    ends = time.monotonic() + HOSTILE_FOR_S
    while time.monotonic() < ends:
        sock.sendall(b"x")
        time.sleep(0.05)


def trickled_head(sock: socket.socket) -> None:
    _trickle(sock, b"HTTP/1.1 200 OK\r\nx-padding: ")


def trickled_body(sock: socket.socket) -> None:
    _trickle(sock, b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")


def endless_body(sock: socket.socket) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65_536, b"x" * 65_536)
    ends = time.monotonic() + HOSTILE_FOR_S
    while time.monotonic() < ends:
        sock.sendall(chunk)


BOMB = gzip.compress(b"\0" * (8 * MAX_ANSWER_BYTES))


def compression_bomb(sock: socket.socket) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(BOMB)
    sock.sendall(head + BOMB)


@contextmanager
def serving(behaviours: list[Behaviour]) -> Iterator[str]:
    """Each call gets the next behaviour; a connection is closed after a hostile one."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while behaviours and _read_request(self):
                behaviour = behaviours.pop(0)
                try:
                    behaviour(self.connection)
                except OSError:  # the client hung up: what it should do
                    return
                if behaviour is not accepted:
                    return

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


HOSTILE = {
    "trickled head": (trickled_head, TIMEOUT),
    "trickled body": (trickled_body, TIMEOUT),
    "endless body": (endless_body, NETWORK_ERROR),
    "compression bomb": (compression_bomb, NETWORK_ERROR),
}


#: httpx's own path (through a proxy) bounds each read of the head, not the whole head
#: (docs/delivery.md): a trickled head goes the lean way only.
CASES = [
    (shape, way)
    for shape in HOSTILE
    for way in ("lean", "httpx through a proxy")
    if way == "lean" or shape != "trickled head"
]


@pytest.mark.parametrize(("shape", "way"), CASES)
def test_a_hostile_answer_ends_the_call_in_time_and_the_batch_goes_again(
    shape: str, way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour, kind = HOSTILE[shape]
    calls: list[tuple[str, float]] = []
    with serving([behaviour, accepted]) as base:
        if way == "lean":
            url = f"{base}/graphql"
        else:
            monkeypatch.setenv("HTTP_PROXY", base)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            url = "http://connect.example/graphql"
        connect = client(
            url,
            threading.Event(),
            timeout_s=TIMEOUT_S,
            on_call=lambda k, s, n: calls.append((k, s)),
        )
        assert isinstance(connect._transport, LeanTransport) is (way == "lean")
        report = connect.deliver(batch("a"))
        connect.close()
    assert [k for k, _ in calls] == [kind, "ok"]
    assert calls[0][1] < TIMEOUT_S + 1.5, "the hostile answer held the call too long"
    assert (report.calls, report.retries, report.rejected, report.abandoned) == (2, 1, {}, False)
