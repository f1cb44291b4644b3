"""The lean transport: createSignals calls over the standard library's http.client.

httpx, httpcore and h11 spend ~1,500 Python calls on a 500-signal call; this sends the
same request (``_field`` writes each header line as http.client's putheader would),
reads the answer strictly as h11 would (``_Answer``) and raises httpx's exceptions, so
``ConnectClient`` classifies a call the same whichever way it went.

A call is bounded as a whole, not only read by read: a socket timeout never trips on a
server or proxy that trickles a byte at a time, so ``CallWatchdog`` shuts down the
socket of a call past its deadline, and ``read_body`` refuses an answer over
``MAX_ANSWER_BYTES`` (an endless body, a compression bomb).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import httpx

#: An idle connection older than this is not reused (httpx's keep-alive expiry).
KEEPALIVE_EXPIRY_S: Final = 5.0


def _readable(sock: Any) -> bool:
    """An idle connection's socket with something to read: the server closed it (poll,
    not select: any descriptor number)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


#: The largest answer read, raw and decoded: Connect's answer to 500 signals is tens of
#: KB; more is a proxy's endless body or a compression bomb.
MAX_ANSWER_BYTES: Final = 8 * 1024 * 1024
#: The watchdog's sleep when no call is running: short, so that a call's deadline
#: (PIPELINE_REQUEST_TIMEOUT_S away) rarely needs to wake it early.
_IDLE_WAKE_S: Final = 1.0
#: How much of an answer's body is read at a time.
_PART_BYTES: Final = 65_536


@dataclass(eq=False, slots=True)
class CallWatch:
    """One running call, as the watchdog sees it."""

    sock: socket.socket
    deadline: float
    expired: bool = False


class CallWatchdog:
    """Shuts down the socket of a call still running at its deadline.

    A socket timeout bounds one read; a server that sends a byte now and then holds a
    call for ever. Shut down, the socket wakes the blocked thread (an end of file, a
    broken pipe), which then raises a timeout. One thread, started with the first
    call, sleeping until the earliest deadline.
    """

    def __init__(self) -> None:
        self._watches: set[CallWatch] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wakes_at = 0.0
        self._closed = False

    def watch(self, sock: socket.socket, deadline: float) -> CallWatch:
        watch = CallWatch(sock, deadline)
        with self._changed:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="connect-call-watchdog", daemon=True
                )
                self._thread.start()
            elif deadline < self._wakes_at:
                self._changed.notify()
        return watch

    def forget(self, watch: CallWatch) -> None:
        with self._changed:
            self._watches.discard(watch)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                for watch in [w for w in self._watches if w.deadline <= now]:
                    self._watches.discard(watch)
                    watch.expired = True
                    # the plain socket's shutdown: an SSLSocket's would drop its TLS
                    # state under the thread still reading it
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(watch.sock, socket.SHUT_RDWR)
                deadlines = (w.deadline for w in self._watches)
                self._wakes_at = min(deadlines, default=now + _IDLE_WAKE_S)
                self._changed.wait(self._wakes_at - now)


class _Parts(httpx.SyncByteStream):
    """An answer's raw body as it was read, part by part (decoded part by part)."""

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._parts)


def read_body(response: httpx.Response, deadline: float) -> bytes:
    """The answer's body, decoded as httpx's ``read()`` would; closes the response.

    Refused past ``MAX_ANSWER_BYTES`` decoded (a network error: retried) and, checked
    between parts, past the call's deadline (a timeout): on httpx's own path (through
    a proxy) the watchdog cannot reach the socket, so a trickled body ends here.
    """
    parts: list[bytes] = []
    size = 0
    try:
        for part in response.iter_bytes():
            size += len(part)
            if size > MAX_ANSWER_BYTES:
                raise httpx.RemoteProtocolError(f"an answer over {MAX_ANSWER_BYTES:,} bytes")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("the answer took longer than the call's timeout")
            parts.append(part)
    finally:
        response.close()
    return b"".join(parts)


def _read_parts(answer: http.client.HTTPResponse) -> list[bytes]:
    """The raw body, refused past ``MAX_ANSWER_BYTES`` or cut short of its length."""
    parts: list[bytes] = []
    size = 0
    while part := answer.read(_PART_BYTES):
        size += len(part)
        if size > MAX_ANSWER_BYTES:
            raise http.client.HTTPException(f"an answer over {MAX_ANSWER_BYTES:,} bytes")
        parts.append(part)
    if answer.length:  # read(amt) ends quietly where read() raises: the server hung up
        raise http.client.IncompleteRead(b"".join(parts), answer.length)
    return parts


#: http.client's limits on an answer's header block
_MAX_LINE: Final = 65_536
_MAX_FIELDS: Final = 100
#: An RFC 9110 field name (a token)
_is_field_name: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch


def _field(name: str, value: str) -> bytes:
    """One request header line as http.client's putheader writes it.

    putheader checks each value with a regex (~0.2 ms on the ~20 KB
    Signal-Idempotency-Keys); three byte scans in C refuse what would end the line
    early (CR, LF: a header injected) and NUL, folded lines included, raising the
    same ValueError.
    """
    raw_name = name.encode("ascii")
    encoded = value.encode("latin-1")  # as putheader: a character past U+00FF raises
    if not _is_field_name(raw_name):
        raise ValueError(f"Invalid header name {raw_name!r}")
    if b"\n" in encoded or b"\r" in encoded or b"\0" in encoded:
        raise ValueError(f"Invalid header value for {name}")  # not the value: a secret?
    return b"".join((raw_name, b": ", encoded, b"\r\n"))


class _Answer(http.client.HTTPResponse):
    """http.client's response, its status line and header block read here.

    ``http.client.parse_headers`` hands the header block to the email package (~50 µs
    for five fields) and the standard library has no lighter route, so ``begin`` is
    http.client's, with the fields split here, strictly as h11 would (a line that is
    not ``token: value`` is a protocol error); the body is then read by http.client
    (Content-Length, chunked, or up to the close). ``fields`` keeps them as bytes.
    """

    fields: list[tuple[bytes, bytes]]

    def _line(self, what: str) -> bytes:
        line = self.fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong(what)
        return line

    def _status_line(self) -> int:
        line = self._line("status line")
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        version, _, rest = line.decode("iso-8859-1").partition(" ")
        code, after = rest[:3], rest[3:4]
        digits = len(code) == 3 and code.isascii() and code.isdigit() and code[0] != "0"
        valid = digits and after in " \r\n"
        if not (version.startswith("HTTP/") and valid):
            raise http.client.BadStatusLine(line.decode("iso-8859-1"))
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.reason = rest[3:].strip()
        return int(code)

    def _fields(self) -> list[tuple[bytes, bytes]]:
        fields: list[tuple[bytes, bytes]] = []
        while (line := self._line("header line")) not in (b"\r\n", b"\n"):
            if not line.endswith(b"\n"):  # the head cut short: h11's error, not an end
                raise http.client.IncompleteRead(line)
            if len(fields) >= _MAX_FIELDS:
                raise http.client.HTTPException(f"got more than {_MAX_FIELDS} headers")
            if line[0] in b" \t" and fields:  # an obsolete folded line: one value (h11)
                name, value = fields[-1]
                fields[-1] = (name, (value + b" " + line.strip()).strip())
                continue
            name, colon, value = line.partition(b":")
            if not colon or not _is_field_name(name):
                raise http.client.HTTPException(f"malformed header line {line[:200]!r}")
            fields.append((name, value.strip()))
        return fields

    def begin(self) -> None:
        status = self._status_line()
        while status == http.client.CONTINUE:
            self._fields()
            status = self._status_line()
        self.code = self.status = status
        self.fields = fields = self._fields()
        first: dict[bytes, bytes] = {}
        message = http.client.HTTPMessage()
        for name, value in fields:
            message.set_raw(name.decode("iso-8859-1"), value.decode("iso-8859-1"))
            first.setdefault(name.lower(), value.lower())
        self.headers = self.msg = message
        self.chunked = first.get(b"transfer-encoding") == b"chunked"
        self.chunk_left = None
        connection = first.get(b"connection", b"")
        if self.version == 11:
            self.will_close = b"close" in connection
        else:  # HTTP/1.0 closes unless it says keep-alive
            self.will_close = not (
                b"keep-alive" in first
                or b"keep-alive" in connection
                or b"keep-alive" in first.get(b"proxy-connection", b"")
            )
        self.length = None
        length = first.get(b"content-length")
        if length and not self.chunked:
            with contextlib.suppress(ValueError):
                self.length = int(length)
            if self.length is not None and self.length < 0:
                self.length = None
        if status in (204, 304) or 100 <= status < 200:
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class LeanTransport:
    """POST to one fixed http(s) URL with the standard library's http.client: one
    keep-alive connection per delivery thread (as many as calls in flight).

    httpx, httpcore and h11 spend ~1,500 Python calls on a call; h11 alone checks the
    ~20 KB Signal-Idempotency-Keys value with a regex (~0.3 ms). This sends the same
    request (the client's headers, ``Accept-Encoding: identity``), its head written as
    http.client writes it (``_field``) and the answer read by ``_Answer``, and raises
    httpx's exceptions, so a call is classified exactly as on the httpx path: a
    timeout is an ``httpx.TimeoutException``, anything else on the wire an
    ``httpx.TransportError``. A connection is reused as httpcore would: not when the
    server closed it (its socket is readable) or after ``KEEPALIVE_EXPIRY_S`` idle. The
    timeout bounds each read and, through the watchdog, the whole call. The response
    is returned with its body read but not decoded: ``read_body`` does that.
    """

    def __init__(
        self,
        url: httpx.URL,
        headers: dict[str, str],
        timeout_s: float,
        context: ssl.SSLContext | None,
        watchdog: CallWatchdog | None = None,
    ) -> None:
        self._host = url.host
        self._port = url.port
        self._context = context
        self._timeout_s = timeout_s
        host = f"[{url.host}]" if ":" in url.host else url.host  # an IPv6 literal
        netloc = host if url.port is None else f"{host}:{url.port}"
        skip = {"host", "accept-encoding", "content-length", "transfer-encoding"}
        fixed = [("Host", netloc), ("Accept-Encoding", "identity")]
        fixed += [(k, v) for k, v in headers.items() if k.lower() not in skip]
        target = url.raw_path  # percent-encoded by httpx: no space or control character
        self._head = b"".join([b"POST " + target + b" HTTP/1.1\r\n", *(_field(*f) for f in fixed)])
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self._watchdog = watchdog or CallWatchdog()

    def _connection(self) -> http.client.HTTPConnection:
        local = self._local
        connection: http.client.HTTPConnection | None = getattr(local, "connection", None)
        if connection is not None:
            sock = connection.sock
            idle = time.monotonic() - local.used
            if sock is None or idle > KEEPALIVE_EXPIRY_S or _readable(sock):
                self._drop(connection)
                connection = None
        if connection is None:
            if self._context is None:
                connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout_s
                )
            else:
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout_s, context=self._context
                )
            local.connection = connection
            with self._lock:
                self._open.add(connection)
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        self._local.connection = None
        with self._lock:
            self._open.discard(connection)

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        head = b"".join(
            [
                self._head,
                *(_field(name, value) for name, value in headers.items()),
                b"Content-Length: %d\r\n\r\n" % len(body),
            ]
        )
        connection = self._connection()
        deadline = time.monotonic() + self._timeout_s
        watch: CallWatch | None = None
        try:
            if connection.sock is None:
                connection.connect()  # inside the try: a failure to connect is classified
            watch = self._watchdog.watch(connection.sock, deadline)
            try:
                # as httpcore: the server may have answered before it stopped reading (a 413)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    connection.send(head)
                    connection.send(body)
                with _Answer(connection.sock, method="POST") as answer:  # closed on errors
                    answer.begin()
                    parts = _read_parts(answer)
            finally:
                self._watchdog.forget(watch)
        except TimeoutError as error:
            self._drop(connection)
            raise httpx.ReadTimeout(str(error) or "timed out") from error
        except (OSError, http.client.HTTPException) as error:
            self._drop(connection)
            if watch is not None and watch.expired:
                message = f"no whole answer within {self._timeout_s:g} s"
                raise httpx.ReadTimeout(message) from error
            kind = type(error).__name__
            raise httpx.RemoteProtocolError(f"{kind}: {error}") from error
        except BaseException:
            self._drop(connection)
            raise
        if answer.will_close:
            self._drop(connection)
        else:
            self._local.used = time.monotonic()
        # read (decoded, bounded) by read_body, as httpx's own answers are
        return httpx.Response(answer.status, headers=answer.fields, stream=_Parts(parts))

    def close(self) -> None:
        with self._lock:
            open_, self._open = self._open, set()
        for connection in open_:
            connection.close()
        self._watchdog.close()


def lean_transport(
    url: httpx.URL,
    headers: dict[str, str],
    timeout_s: float,
    pool: Any,
    *,
    direct: bool,
) -> LeanTransport | None:
    """The lean transport where it sends what httpx would: no proxy, and for https the
    very SSL context httpx made for its pool (``verify``: a context, or the CA bundle).
    Configured headers it cannot write (a name not a token, a line break in a value)
    are left to httpx, which refuses them call by call as it always did."""
    if not direct or url.scheme not in ("http", "https"):
        return None
    context = getattr(getattr(pool, "_pool", None), "_ssl_context", None)
    if url.scheme == "https" and not isinstance(context, ssl.SSLContext):
        return None
    try:
        return LeanTransport(url, headers, timeout_s, context if url.scheme == "https" else None)
    except ValueError:
        return None
