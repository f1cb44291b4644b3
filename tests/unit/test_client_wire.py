"""The lean transport's own reading and writing of HTTP/1.1 against real servers on
127.0.0.1: the request byte for byte what http.client's putheader writes, no header
injected through a key, and answers (chunked, folded, HTTP/1.0, 100 Continue,
malformed) read as http.client and h11 read them."""

from __future__ import annotations

import http.client
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from pipeline.connect.client import (
    CLIENT_ERROR,
    Batch,
    ConnectClient,
    RetryPolicy,
    batch_body,
    batch_key,
    sf_list,
    sf_string,
)
from pipeline.connect.wire import LeanTransport, read_body
from pipeline.signals.mapping import idempotency_key, is_plain_key
from tests.unit.test_client_http import ACCEPTED, Seen, client, scripted, server


@contextmanager
def recording(requests: list[bytes]) -> Iterator[int]:
    """A bare TCP server keeping each request's raw bytes (head and body); answers 200."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while head := self.rfile.readline():
                lines = [head]
                while lines[-1] not in (b"\r\n", b""):
                    lines.append(self.rfile.readline())
                size = next(
                    int(line.split(b":")[1])
                    for line in lines
                    if line.lower().startswith(b"content-length:")
                )
                requests.append(b"".join(lines) + self.rfile.read(size))
                self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(ACCEPTED))
                self.wfile.write(ACCEPTED)

    listening = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    listening.daemon_threads = True
    thread = threading.Thread(target=listening.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield listening.server_address[1]
    finally:
        listening.shutdown()
        listening.server_close()
        thread.join()


def test_the_request_is_byte_for_byte_what_http_clients_putheader_writes() -> None:
    sent = Batch([f"k-{i}" for i in range(300)], [b'{"n":%d}' % i for i in range(300)], [0])
    body = batch_body(sent.fragments)
    headers = {
        "Idempotency-Key": sf_string(batch_key(sent.keys)),
        "Signal-Idempotency-Keys": sf_list(sent.keys),
    }
    requests: list[bytes] = []
    with recording(requests) as port:
        connect = client(f"http://127.0.0.1:{port}/graphql?tenant=a%20b", threading.Event())
        assert connect.deliver(sent).calls == 1
        connect.close()
        # what LeanTransport sent before it wrote the head itself, by http.client
        reference = http.client.HTTPConnection("127.0.0.1", port)
        reference.putrequest(
            "POST", "/graphql?tenant=a%20b", skip_host=True, skip_accept_encoding=True
        )
        reference.putheader("Host", f"127.0.0.1:{port}")
        reference.putheader("Accept-Encoding", "identity")
        reference.putheader("accept", "*/*")  # the httpx client's own headers, then ours
        reference.putheader("connection", "keep-alive")
        reference.putheader("user-agent", f"python-httpx/{httpx.__version__}")
        reference.putheader("content-type", "application/json")
        reference.putheader("x-api-key", "secret")
        for name, value in headers.items():
            reference.putheader(name, value)
        reference.putheader("Content-Length", str(len(body)))
        reference.endheaders(body)
        assert reference.getresponse().read() == ACCEPTED
        reference.close()
    assert len(requests) == 2
    assert requests[0] == requests[1]
    assert requests[0].endswith(b"\r\n\r\n" + body)


def test_no_header_can_be_injected_through_an_event_id() -> None:
    """Ids that are not plain are hashed (the mapping), and a key that would break the
    header line anyway is refused before anything is sent (the transport)."""
    evil = "e-1\r\nX-Injected: yes"
    key = idempotency_key(evil, {"appKey": "a"})
    assert is_plain_key("e-1") and not is_plain_key(evil)
    assert key.startswith("h-") and is_plain_key(key)
    seen = Seen()
    outcomes: list[str] = []
    stop = threading.Event()

    def on_call(kind: str, seconds: float, signals: int) -> None:
        outcomes.append(kind)
        stop.set()  # one attempt each: a refused key is retried until shutdown

    with server(seen) as url:
        connect = client(url, stop, on_call=on_call)
        mapped = Batch(["e-1", key], [b"{}", b"{}"], [0, 1])
        assert connect.deliver(mapped).calls == 1
        refused = []
        for raw in [evil, "a\nX-Injected: yes", "a\rb", "a\x00b", "a\r\n b", "\u0100"]:
            stop.clear()
            refused.append(connect.deliver(Batch(["ok", raw], [b"{}", b"{}"], [0, 1])))
        connect.close()
    assert outcomes == ["ok"] + [CLIENT_ERROR] * 6
    assert all(r.abandoned and r.calls == 1 for r in refused)
    assert len(seen.headers) == 1  # the refused calls never reached the server
    assert "x-injected" not in seen.headers[0]
    assert seen.headers[0]["signal-idempotency-keys"] == f'"e-1", "{key}"'


def body_of(response: httpx.Response) -> bytes:
    return read_body(response, time.monotonic() + 5)


def _chunked(body: bytes) -> bytes:
    half = len(body) // 2
    parts = [body[:half], body[half:]]
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


LENGTH = b"content-length: %d\r\n" % len(ACCEPTED)


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\n" + LENGTH + b"\r\n" + ACCEPTED, True),
        (b"HTTP/1.1 200\r\n" + LENGTH + b"\r\n" + ACCEPTED, True),  # no reason phrase
        (b"HTTP/1.1 200 OK\n" + LENGTH.replace(b"\r", b"") + b"\n" + ACCEPTED, True),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n" + LENGTH + b"\r\n" + ACCEPTED, True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n" + _chunked(ACCEPTED), True),
        (b"HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n" + ACCEPTED, False),  # read to EOF
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\n" + LENGTH + b"\r\n" + ACCEPTED, False),
        (b"HTTP/1.0 200 OK\r\n" + LENGTH + b"\r\n" + ACCEPTED, False),
        (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n" + LENGTH + b"\r\n" + ACCEPTED, True),
    ],
)
def test_an_answer_is_read_and_its_connection_kept_as_http_client_would(
    answer: bytes, reused: bool
) -> None:
    peers: list[tuple[str, int]] = []
    follow = b"HTTP/1.1 200 OK\r\n" + LENGTH + b"\r\n" + ACCEPTED
    with scripted([answer, follow], peers) as url:
        transport = LeanTransport(httpx.URL(url), {"content-type": "application/json"}, 5, None)
        first = transport(url, b"{}", {"Idempotency-Key": '"k"'})
        second = transport(url, b"{}", {"Idempotency-Key": '"k"'})
        transport.close()
    assert (first.status_code, body_of(first)) == (200, ACCEPTED)
    assert (second.status_code, body_of(second)) == (200, ACCEPTED)
    assert (peers[0] == peers[1]) is reused


def test_an_answers_fields_reach_the_classifier_as_httpx_would_give_them() -> None:
    body = b'{"errors":[{"message":"later"}]}'
    answer = (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Retry-After:  7 \r\n"
        b"X-Note: caf\xe9\r\n"  # not ASCII: httpx keeps the bytes
        b"X-Folded: one\r\n two\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    with scripted([answer], []) as url:
        transport = LeanTransport(httpx.URL(url), {}, 5, None)
        response = transport(url, b"{}", {})
        transport.close()
    assert response.status_code == 503 and body_of(response) == body
    assert response.headers["retry-after"] == "7"
    assert response.headers["x-folded"] == "one two"
    assert response.headers.raw[1] == (b"X-Note", b"caf\xe9")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 2000 OK\r\n",
        b"HTTP/1.1 20 OK\r\n",
        b"HTTP/1.1 099 OK\r\n",
        b"HTTP/1.1 2\xb20 OK\r\n",
        b"ICY 200 OK\r\n",
        b"HTTP/2 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nno colon in this line\r\n",
        b"HTTP/1.1 200 OK\r\nspace before : colon\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"x-many: 1\r\n" * 101,
        b"HTTP/1.1 200 OK\r\nx-long: " + b"x" * 70_000 + b"\r\n",
    ],
)
def test_a_malformed_answer_is_a_transport_error_and_the_connection_replaced(
    answer: bytes,
) -> None:
    peers: list[tuple[str, int]] = []
    follow = b"HTTP/1.1 200 OK\r\n" + LENGTH + b"\r\n" + ACCEPTED
    closing = answer + b"\r\nshort"  # the server then closes the connection
    with scripted([closing, follow], peers) as url:
        transport = LeanTransport(httpx.URL(url), {}, 5, None)
        with pytest.raises(httpx.TransportError):
            transport(url, b"{}", {})
        assert body_of(transport(url, b"{}", {})) == ACCEPTED
        transport.close()
    assert len(set(peers)) == 2


@pytest.mark.parametrize(
    ("name", "value"), [("X API Key", "secret"), ("X-API-Key", "secret\n"), ("X-Key", "a\r\nb: c")]
)
def test_configured_headers_the_lean_way_cannot_write_are_left_to_httpx(
    name: str, value: str
) -> None:
    stop = threading.Event()
    connect = ConnectClient(
        "http://127.0.0.1:9/graphql",
        name,
        value,
        timeout_s=1.0,
        max_connections=1,
        retry=RetryPolicy(),
        stop=stop,
    )
    assert not isinstance(connect._transport, LeanTransport)
    connect.close()
    with pytest.raises(ValueError, match="X-Key") as refused:
        LeanTransport(httpx.URL("http://127.0.0.1:9/"), {"X-Key": "a\rb"}, 1, None)
    assert "a\\rb" not in str(refused.value)  # a value may be a secret: never shown
