"""Liveness, readiness and the metrics page over HTTP: /healthz, /readyz, /metrics.

Liveness (/healthz): the poll loop iterated within ``liveness_timeout_s``, or a
ledger load is in progress and read records within that time (a load that makes
progress is not a hang). It is the one thing a restart can fix (a stuck thread); a
broker or API outage is not, so liveness ignores them and the pod is not restarted in
a loop during an outage.

Readiness (/readyz), all of:
- live (as above);
- joined: the member has joined its consumer group and received an assignment, which
  may be empty (more replicas than partitions is a valid standby, not a fault);
- ledger loaded: no ledger load in progress (its partitions cannot work before);
- broker reachable: librdkafka's latest statistics show at least one broker
  connection up, and those statistics are recent;
- API not failing: the latest createSignals attempts did not end in a transient
  failure (5xx, timeout, network error, 401/403/404), i.e. no batch is being retried.

Each endpoint answers 200 or 503 with a small JSON body naming every check.

The server listens on IPv4 or IPv6 by the host's form; ``::`` is dual stack (IPv6 and
IPv4-mapped), so one setting serves IPv6-only, IPv4-only and dual-stack clusters.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class HealthState:
    """What the consumer reports and the probes read (plain attributes: cheap to set)."""

    liveness_timeout_s: float = 60.0
    stats_max_age_s: float = 30.0
    api_failing: Callable[[], bool] = lambda: False
    last_loop: float = field(default_factory=time.monotonic)
    joined: bool = False
    brokers_up: int = 0
    last_stats: float | None = None
    group_state: str = ""
    #: a ledger load: () -> (ledger partitions being read, seconds since it read a record)
    ledger_load: Callable[[], tuple[int, float]] = lambda: (0, 0.0)

    def beat(self) -> None:
        """The poll loop iterated."""
        self.last_loop = time.monotonic()

    def on_statistics(self, stats: dict[str, Any]) -> None:
        brokers = (stats.get("brokers") or {}).values()
        # nodeid -1 is the bootstrap placeholder; it says nothing about the cluster
        self.brokers_up = sum(
            1 for b in brokers if b.get("state") == "UP" and b.get("nodeid", -1) >= 0
        )
        self.group_state = str((stats.get("cgrp") or {}).get("state", ""))
        self.last_stats = time.monotonic()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        since = time.monotonic() - self.last_loop
        loading, stalled = self.ledger_load()
        live = since <= self.liveness_timeout_s or (
            loading > 0 and stalled <= self.liveness_timeout_s
        )
        details = {"poll_loop": live, "seconds_since_poll": round(since, 3)}
        if loading:
            details["ledger_loading"] = loading
        return live, details

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        live, details = self.liveness()
        fresh = (
            self.last_stats is not None
            and time.monotonic() - self.last_stats <= self.stats_max_age_s
        )
        checks = {
            "poll_loop": live,
            "group_joined": self.joined,
            "broker_reachable": fresh and self.brokers_up > 0,
            "api_ok": not self.api_failing(),
            "ledger_loaded": self.ledger_load()[0] == 0,
        }
        return all(checks.values()), {**checks, **details, "brokers_up": self.brokers_up}


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = self.server.metrics_page()
            self._send(200, body, content_type)
        elif path in ("/healthz", "/livez"):
            self._check(*self.server.health.liveness())
        elif path == "/readyz":
            self._check(*self.server.health.readiness())
        else:
            self._send(404, b"not found\n", "text/plain")

    def _check(self, ok: bool, details: dict[str, Any]) -> None:
        body = json.dumps({"ok": ok, **details}).encode() + b"\n"
        self._send(200 if ok else 503, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would drown the logs


def address_family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 literal (``::``, ``::1``), else IPv4 (an address or a name)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class HealthServer(ThreadingHTTPServer):
    """The operations endpoint, in daemon threads beside the consumer."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        health: HealthState,
        metrics_page: Callable[[], tuple[bytes, str]],
    ) -> None:
        self.address_family = address_family(host)
        super().__init__((host, port), _Handler)
        self.health = health
        self.metrics_page = metrics_page
        self._thread = threading.Thread(target=self.serve_forever, name="ops-http", daemon=True)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # IPv4 clients too, whatever the kernel's default (net.ipv6.bindv6only)
            with contextlib.suppress(OSError, AttributeError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # not HTTPServer.server_bind: its getfqdn() is a reverse DNS lookup at start
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.port

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)
