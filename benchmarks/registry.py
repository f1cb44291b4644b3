"""A tiny read-only Schema Registry over HTTP, so several processes share schema ids.

confluent-kafka's ``mock://`` registry lives inside one process; the pipeline and the
reference pipeline run in their own processes and must resolve the same Confluent
framing. This serves the one call a deserializer makes, ``GET /schemas/ids/{id}``,
from schemas the benchmark registers in-process (``register_schema``, the same
signature as ``SchemaRegistryClient``'s, so ``EventEncoder`` can use it directly).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LocalRegistry:
    """Schema ids assigned in registration order, served on 127.0.0.1."""

    def __init__(self) -> None:
        self._by_id: dict[int, str] = {}
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                prefix = "/schemas/ids/"
                path = self.path.split("?", 1)[0]
                schema = None
                if path.startswith(prefix) and path[len(prefix) :].isdigit():
                    schema_id = int(path[len(prefix) :])
                    schema = registry._by_id.get(schema_id)
                if schema is None:
                    body = json.dumps({"error_code": 40403, "message": "Schema not found"})
                    self._send(404, body.encode())
                    return
                document = {"id": schema_id, "schema": schema, "schemaType": "AVRO"}
                self._send(200, json.dumps(document).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def register_schema(self, subject: str, schema: Any) -> int:
        text = schema.schema_str
        with self._lock:
            if text not in self._ids:
                self._ids[text] = len(self._ids) + 1
                self._by_id[self._ids[text]] = text
            return self._ids[text]

    def start(self) -> LocalRegistry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
