"""A real HTTP server that speaks the Schema Registry's REST API (GET /schemas/ids/{id},
GET /schemas/guids/{guid}) and can lie: every id's answer is set by the test, and every
request is counted.

Answers are (status, content type, body). Helpers build the ones a registry gives
(``schema``, ``not_found``) and the ones a misaddressed or broken one gives
(``html_404``, ``server_error``...). ``hang_s`` makes the server sleep before answering,
``hangs`` (by id) before answering for that id.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any, Final

from devtools.stack import loopback_http

Answer = tuple[int, str, bytes]

JSON: Final = "application/vnd.schemaregistry.v1+json"


def schema(text: str | dict[str, Any], schema_type: str | None = None) -> Answer:
    """A registry's answer for an id: the schema text (and its type unless Avro)."""
    body: dict[str, Any] = {"schema": text if isinstance(text, str) else json.dumps(text)}
    if schema_type is not None:
        body["schemaType"] = schema_type
    return 200, JSON, json.dumps(body).encode()


def not_found(schema_id: int | str) -> Answer:
    """What Confluent's registry answers for an id it does not have."""
    body = {"error_code": 40403, "message": f"Schema {schema_id} not found"}
    return 404, JSON, json.dumps(body).encode()


def subject_not_found() -> Answer:
    return 404, JSON, b'{"error_code":40401,"message":"Subject not found"}'


def html_404() -> Answer:
    """An ingress's page for a path it does not route: no registry behind it."""
    return 404, "text/html", b"<html><body><h1>404 Not Found</h1>nginx</body></html>"


def server_error() -> Answer:
    return 500, JSON, b'{"error_code":50001,"message":"Error in the backend data store"}'


class FakeRegistry:
    """The server's state: answers by id or GUID (``default`` for the rest), requests by
    id or GUID."""

    def __init__(self) -> None:
        self.answers: dict[int | str, Answer] = {}
        self.default: Answer | None = None  # None: not_found(id)
        self.hang_s = 0.0
        self.hangs: dict[int | str, float] = {}
        self.requests: Counter[int | str] = Counter()
        self._lock = threading.Lock()

    def answer(self, path: str) -> Answer:
        parts = path.split("?", 1)[0].strip("/").split("/")
        schema_id: int | str
        if len(parts) == 3 and parts[:2] == ["schemas", "guids"]:
            schema_id = parts[2]
        elif len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
            schema_id = int(parts[2])
        else:
            return html_404()
        with self._lock:
            self.requests[schema_id] += 1
        hang_s = self.hangs.get(schema_id, self.hang_s)
        if hang_s:
            time.sleep(hang_s)
        found = self.answers.get(schema_id, self.default)
        return found if found is not None else not_found(schema_id)


@contextmanager
def fake_registry() -> Iterator[tuple[FakeRegistry, str]]:
    """A running server on 127.0.0.1 (any free port): its state and its URL."""
    state = FakeRegistry()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = state.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

    with loopback_http(Handler) as base:
        yield state, base
