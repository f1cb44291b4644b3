"""The Connect API simulator: a Starlette app serving createSignals over GraphQL.

Strict on purpose: it validates from its own SDL (``schema.graphql``) and rules
(``connect_sim.rules``), honours the Idempotency-Key header, records what it
accepts, and injects faults deterministically under a seed.

HTTP surface (the tests, the demo and the benchmarks rely on it):

- ``POST /graphql``: createSignals; auth header, ``Idempotency-Key`` (sf-string),
  ``Signal-Idempotency-Keys`` (List of sf-strings, one per signal).
- ``GET /stats``: counts (accepted, rejected, duplicates, replayed, unique_keys,
  requests by status, faults injected).
- ``GET /signals``: accepted signals as JSON Lines (key, batchKey, receivedAt, signal);
  about the latest ``record_limit`` of them when one is set (long benchmarks).
- ``POST /reset``: forget everything recorded; re-seed the faults.
- ``GET|POST /admin/faults``: fault settings (``connect_sim.faults.Faults``).
- ``GET|POST /admin/idempotency``: ``{"enabled": bool, "ttl_s": float}``.
- ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import asdict
from typing import Any, Final

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connect_sim import faults as fault_names
from connect_sim.faults import Faults
from connect_sim.headers import parse_sf_string
from connect_sim.idempotency import Verdict
from connect_sim.simulator import Config, RequestError, Simulator

__all__ = ["Config", "Faults", "Simulator", "build_app"]


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(document), status, headers, media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"errors": [{"message": message}]}, headers)


def build_app(config: Config) -> ASGIApp:
    sim = Simulator(config)

    async def graphql_endpoint(request: Request) -> Response:
        response = await _graphql(sim, request)
        sim.count_status(response.status_code)
        return response

    async def stats(request: Request) -> Response:
        return _json(
            200,
            {
                **sim.counts,
                "unique_keys": len(sim.keys_seen),
                "requests": sim.statuses,
                "faults": sim.faults_injected,
            },
        )

    async def signals(request: Request) -> Response:
        lines = b"".join(sim.accepted_lines())
        return Response(lines, media_type="application/x-ndjson")

    async def reset(request: Request) -> Response:
        sim.reset()
        return _json(200, {"reset": True})

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                sim.set_faults(Faults.from_json(orjson.loads(await request.body() or b"{}")))
            except (ValueError, TypeError) as error:
                return _json(400, {"error": str(error)})
        return _json(200, asdict(sim.config.faults))

    async def idempotency(request: Request) -> Response:
        if request.method == "POST":
            try:
                given = orjson.loads(await request.body() or b"{}")
            except orjson.JSONDecodeError:
                given = None
            if not isinstance(given, dict):
                return _json(400, {"error": "expected {enabled: bool, ttl_s: number}"})
            enabled = given.pop("enabled", sim.config.idempotency)
            ttl_s = given.pop("ttl_s", sim.config.idempotency_ttl_s)
            bad_ttl = isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or ttl_s < 0
            if given or not isinstance(enabled, bool) or bad_ttl:
                return _json(400, {"error": "expected {enabled: bool, ttl_s: number}"})
            sim.set_idempotency(enabled, float(ttl_s))
        settings = {"enabled": sim.config.idempotency, "ttl_s": sim.config.idempotency_ttl_s}
        return _json(200, settings)

    async def health(request: Request) -> Response:
        return _json(200, {"ok": True})

    app = Starlette(
        routes=[
            Route("/graphql", graphql_endpoint, methods=["POST"]),
            Route("/stats", stats),
            Route("/signals", signals),
            Route("/reset", reset, methods=["POST"]),
            Route("/admin/faults", faults, methods=["GET", "POST"]),
            Route("/admin/idempotency", idempotency, methods=["GET", "POST"]),
            Route("/healthz", health),
        ]
    )
    app.state.simulator = sim
    return _FaultMiddleware(app, sim)


async def _graphql(sim: Simulator, request: Request) -> Response:
    config = sim.config
    given = request.headers.get(config.auth_header, "").encode()
    if not hmac.compare_digest(given, config.expected_auth):
        return _error(401, "missing or wrong API key")
    fault = request.scope.get(FAULT_SCOPE_KEY)
    answer = fault_names.answer_for(fault)
    if answer is not None:  # nothing recorded: the client must not take it as an answer
        status, headers, content = answer
        return Response(content, status, headers)
    if fault in fault_names.SERVER_ERRORS:
        return _error(int(fault), "injected failure")
    if fault == fault_names.RATE_LIMITED:
        return _error(429, "rate limited", {"retry-after": f"{config.faults.retry_after_s:g}"})
    body = await request.body()
    slow_over = config.faults.gateway_timeout_over_signals
    if slow_over and _signal_count(sim, body) > slow_over:
        # a backend too slow for large batches: the gateway gives up, nothing recorded
        sim.faults_injected["504_large"] = sim.faults_injected.get("504_large", 0) + 1
        status, headers, content = fault_names.gateway_timeout_answer()
        return Response(content, status, headers)
    if fault == fault_names.TIMEOUT:
        # Received, then stuck (a slow backend): served late, after the client gave up.
        await asyncio.sleep(config.faults.timeout_s)
    header = request.headers.get("idempotency-key")
    batch_key = None if header is None else parse_sf_string(header)
    if header is not None and batch_key is None:
        return _error(400, "Idempotency-Key: not an sf-string")
    stored = batch_key is not None and config.idempotency
    if stored:
        assert batch_key is not None
        fingerprint = hashlib.sha256(body).hexdigest()
        verdict, entry = sim.store.begin(batch_key, fingerprint, time.monotonic())
        if verdict is Verdict.IN_PROGRESS:
            return _error(409, "a request with this Idempotency-Key is being processed")
        if verdict is Verdict.MISMATCH:
            return _error(422, "Idempotency-Key reused with a different payload")
        if verdict is Verdict.REPLAY:
            assert entry is not None and entry.status is not None
            sim.counts["replayed"] += 1
            return Response(entry.body, entry.status, media_type="application/json")
    try:
        delay = sim.plan.latency_s()
        if delay:
            await asyncio.sleep(delay)  # processing time: a repeat meanwhile gets 409
        status, document = sim.answer(
            body, request.headers.get("signal-idempotency-keys"), batch_key
        )
    except BaseException:
        if stored:
            assert batch_key is not None
            sim.store.abandon(batch_key)
        raise
    payload = orjson.dumps(document)
    if stored:
        assert batch_key is not None
        sim.store.complete(batch_key, status, payload)
    return Response(payload, status, media_type="application/json")


def _signal_count(sim: Simulator, body: bytes) -> int:
    """How many signals a request carries (0 when it is malformed: answered later)."""
    try:
        return len(sim.signals_of(orjson.loads(body))[1])
    except (orjson.JSONDecodeError, RequestError):
        return 0


FAULT_SCOPE_KEY: Final = "connect_sim.fault"


class _FaultMiddleware:
    """Decides each createSignals call's fault before routing.

    A dropped connection is a half-sent response followed by an error: uvicorn then
    aborts the socket and the client sees the connection die mid-response, either
    before the call was processed (DROP) or after its signals were recorded
    (DROP_AFTER, the case only an idempotent server and client survive).
    """

    def __init__(self, app: Starlette, sim: Simulator) -> None:
        self.app = app
        self.state = app.state
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/graphql":
            await self.app(scope, receive, send)
            return
        fault = self.sim.plan.next_fault()
        if fault is not None:
            injected = self.sim.faults_injected
            injected[fault] = injected.get(fault, 0) + 1
        if fault == fault_names.DROP:
            await _send_truncated(send, b'{"data":')
            raise ConnectionAbortedError("injected dropped connection")
        scope[FAULT_SCOPE_KEY] = fault
        if fault != fault_names.DROP_AFTER:
            await self.app(scope, receive, send)
            return

        async def send_then_drop(message: Message) -> None:
            if message["type"] == "http.response.body":
                await send({**message, "body": message.get("body", b"")[:8], "more_body": True})
                raise ConnectionAbortedError("injected dropped connection")
            await send(message)

        await self.app(scope, receive, send_then_drop)


async def _send_truncated(send: Send, head: bytes) -> None:
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", b"1000"), (b"content-type", b"application/json")],
    }
    await send(start)
    await send({"type": "http.response.body", "body": head, "more_body": True})
