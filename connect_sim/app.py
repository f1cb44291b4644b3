"""The Connect API simulator: a Starlette app serving createSignals over GraphQL.

Strict on purpose: it validates from its own SDL (``schema.graphql``) and rules
(``connect_sim.rules``), honours the Idempotency-Key header, records what it
accepts, and injects faults deterministically under a seed.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from graphql import (
    DocumentNode,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    build_schema,
    parse,
    validate,
    value_from_ast,
)
from graphql.error import GraphQLError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from connect_sim.rules import Problem, signal_problems

SDL_PATH: Final = Path(__file__).with_name("schema.graphql")
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


@dataclass
class Faults:
    """Fault injection; every decision comes from one seeded random generator."""

    seed: int = 0
    error_rate: float = 0.0  # probability of 500/502/503
    rate_limit_rate: float = 0.0  # probability of 429
    rate_limit_burst: int = 0  # the next N requests get 429
    retry_after_s: float = 0.2
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0  # uniform extra
    drop_connection_rate: float = 0.0  # close the connection mid-response
    timeout_rate: float = 0.0  # hang for timeout_s before answering
    timeout_s: float = 30.0
    reject_whole_batch: bool = False  # any invalid signal rejects the batch


@dataclass
class Config:
    api_key: str = "sim-api-key"
    app_keys: frozenset[str] = frozenset({"sim-app-key"})
    idempotency: bool = True
    idempotency_ttl_s: float = 3600.0
    faults: Faults = field(default_factory=Faults)


@dataclass
class _Stored:
    body_hash: str
    expires: float
    status: int | None = None  # None while the first request is processing
    body: bytes = b""


class _SchemaShape:
    """The SDL, for type-checking the variables form without graphql-core's coercion."""

    def __init__(self, schema: GraphQLSchema) -> None:
        mutation = schema.mutation_type
        assert mutation is not None
        self.signal_list = mutation.fields["createSignals"].args["signals"].type

    def problems(self, value: Any, gql: GraphQLInputType, path: str) -> list[Problem]:
        if isinstance(gql, GraphQLNonNull):
            if value is None:
                return [(path, "required")]
            return self.problems(value, gql.of_type, path)
        if value is None:
            return []
        if isinstance(gql, GraphQLList):
            if not isinstance(value, list):
                return [(path, "must be a list")]
            out: list[Problem] = []
            for i, item in enumerate(value):
                out.extend(self.problems(item, gql.of_type, f"{path}[{i}]"))
            return out
        if isinstance(gql, GraphQLInputObjectType):
            if not isinstance(value, dict):
                return [(path, "must be an object")]
            out = []
            fields = gql.fields
            for key, item in value.items():
                sub = f"{path}.{key}" if path else key
                if key not in fields:
                    out.append((sub, f"unknown field of {gql.name}"))
                else:
                    out.extend(self.problems(item, fields[key].type, sub))
            for key, spec in fields.items():
                if isinstance(spec.type, GraphQLNonNull) and key not in value:
                    out.append((f"{path}.{key}" if path else key, "required"))
            return out
        assert isinstance(gql, GraphQLScalarType)
        return [(path, f"must be {gql.name}")] if not _scalar_ok(value, gql.name) else []


def _scalar_ok(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return name == "Boolean"
    if name == "String":
        return isinstance(value, str)
    if name == "Int":
        return isinstance(value, int) and INT_MIN <= value <= INT_MAX
    if name == "Float":
        return isinstance(value, int | float) and math.isfinite(value)
    if name == "ID":
        return isinstance(value, str | int)
    return False


def parse_sf_string(text: str) -> str | None:
    """An RFC 8941 sf-string, or None when malformed."""
    text = text.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return None
    out, i, inner = [], 0, text[1:-1]
    while i < len(inner):
        c = inner[i]
        if c == "\\":
            if i + 1 >= len(inner) or inner[i + 1] not in '"\\':
                return None
            out.append(inner[i + 1])
            i += 2
            continue
        if c == '"' or not (0x20 <= ord(c) <= 0x7E):
            return None
        out.append(c)
        i += 1
    return "".join(out)


def parse_sf_list(text: str) -> list[str] | None:
    """An RFC 8941 List of sf-strings, or None when malformed."""
    items: list[str] = []
    rest = text.strip()
    while rest:
        if rest[0] != '"':
            return None
        end, i = None, 1
        while i < len(rest):
            if rest[i] == "\\":
                i += 2
                continue
            if rest[i] == '"':
                end = i
                break
            i += 1
        if end is None:
            return None
        item = parse_sf_string(rest[: end + 1])
        if item is None:
            return None
        items.append(item)
        rest = rest[end + 1 :].lstrip()
        if rest:
            if rest[0] != ",":
                return None
            rest = rest[1:].lstrip()
            if not rest:
                return None
    return items


def _error(index: int, field_path: str, rule: str) -> dict[str, Any]:
    parts: list[str | int] = ["createSignals", "signals", index]
    for part in field_path.replace("[", ".[").split("."):
        if not part:
            continue
        parts.append(int(part[1:-1]) if part.startswith("[") else part)
    return {
        "message": f"signals[{index}].{field_path}: {rule}",
        "path": parts,
        "extensions": {"code": "INVALID_SIGNAL", "index": index, "field": field_path},
    }


class Simulator:
    """State and request handling; one per process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.schema = build_schema(SDL_PATH.read_text())
        self.shape = _SchemaShape(self.schema)
        self.documents: dict[str, DocumentNode | list[dict[str, Any]]] = {}
        self.reset()

    def reset(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.keys_seen: set[str] = set()
        self.counts = {"accepted": 0, "rejected": 0, "duplicates": 0, "replayed": 0}
        self.statuses: dict[str, int] = {}
        self.faults_injected: dict[str, int] = {}
        self.idempotency: dict[str, _Stored] = {}
        self.rng = random.Random(self.config.faults.seed)
        self.burst_left = self.config.faults.rate_limit_burst
        self.next_id = 0

    def set_faults(self, faults: Faults) -> None:
        self.config.faults = faults
        self.rng = random.Random(faults.seed)
        self.burst_left = faults.rate_limit_burst

    # --- faults -----------------------------------------------------------------------

    def choose_fault(self) -> str | None:
        f, r = self.config.faults, self.rng
        if self.burst_left > 0:
            self.burst_left -= 1
            return "429"
        draws = (r.random(), r.random(), r.random(), r.random())
        if draws[0] < f.drop_connection_rate:
            return "drop"
        if draws[1] < f.timeout_rate:
            return "timeout"
        if draws[2] < f.error_rate:
            return r.choice(("500", "502", "503"))
        if draws[3] < f.rate_limit_rate:
            return "429"
        return None

    def latency(self) -> float:
        f = self.config.faults
        return (f.latency_ms + self.rng.uniform(0, f.latency_jitter_ms)) / 1000

    # --- the mutation ---------------------------------------------------------------

    def document_errors(self, query: str) -> DocumentNode | list[dict[str, Any]]:
        cached = self.documents.get(query)
        if cached is None:
            try:
                document = parse(query)
                errors = validate(self.schema, document)
            except GraphQLError as error:
                errors = [error]
                document = None
            formatted: list[dict[str, Any]] = [dict(e.formatted) for e in errors]
            cached = formatted if errors or document is None else document
            if len(self.documents) < 1000:
                self.documents[query] = cached
        return cached

    def extract_signals(
        self, document: DocumentNode, variables: dict[str, Any]
    ) -> tuple[list[Any] | None, list[dict[str, Any]]]:
        operation = next(
            (d for d in document.definitions if isinstance(d, OperationDefinitionNode)), None
        )
        if operation is None or operation.operation.value != "mutation":
            return None, [{"message": "only the createSignals mutation is served"}]
        selection = operation.selection_set.selections[0]
        arguments = getattr(selection, "arguments", None) or ()
        argument = next((a for a in arguments if a.name.value == "signals"), None)
        if argument is None:
            return None, [{"message": "createSignals needs signals"}]
        value = argument.value
        if value.kind == "variable":
            signals = variables.get(value.name.value)
            if not isinstance(signals, list):
                return None, [{"message": "variable $signals must be a list"}]
            return signals, []
        signals = value_from_ast(value, self.shape.signal_list, variables)
        if signals is None:
            return None, [{"message": "signals: not a valid [SignalInput!]!"}]
        return signals, []

    def create_signals(
        self, signals: list[Any], keys: list[str | None], batch_key: str | None
    ) -> dict[str, Any]:
        errors: list[dict[str, Any]] = []
        bad: set[int] = set()
        signal_type = self.shape.signal_list.of_type.of_type
        for i, signal in enumerate(signals):
            problems = self.shape.problems(signal, signal_type, "")
            if not problems:
                problems = signal_problems(signal, self.config.app_keys)
            for field_path, rule in problems:
                errors.append(_error(i, field_path, rule))
            if problems:
                bad.add(i)
        self.counts["rejected"] += len(bad)
        if bad and self.config.faults.reject_whole_batch:
            return {"data": None, "errors": errors}
        ids: list[str | None] = []
        now = time.time()
        for i, signal in enumerate(signals):
            if i in bad:
                ids.append(None)
                continue
            key = keys[i]
            if key is not None:
                if key in self.keys_seen:
                    self.counts["duplicates"] += 1
                self.keys_seen.add(key)
            self.next_id += 1
            ids.append(f"sig-{self.next_id}")
            self.accepted.append(
                {"key": key, "batchKey": batch_key, "receivedAt": now, "signal": signal}
            )
        self.counts["accepted"] += len(signals) - len(bad)
        result: dict[str, Any] = {"data": {"createSignals": {"signalIds": ids}}}
        if errors:
            result["errors"] = errors
        return result


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(document), status, headers, media_type="application/json")


def build_app(config: Config) -> Starlette:
    sim = Simulator(config)
    lock = asyncio.Lock()

    def count(status: int) -> None:
        sim.statuses[str(status)] = sim.statuses.get(str(status), 0) + 1

    async def graphql_endpoint(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {sim.config.api_key}":
            count(401)
            return _json(401, {"errors": [{"message": "missing or wrong API key"}]})
        fault = request.scope.get(FAULT_SCOPE_KEY)
        delay = sim.latency()
        if delay:
            await asyncio.sleep(delay)
        if fault == "timeout":
            await asyncio.sleep(sim.config.faults.timeout_s)
        if fault in ("500", "502", "503"):
            count(int(fault))
            return _json(int(fault), {"errors": [{"message": "injected failure"}]})
        if fault == "429":
            count(429)
            retry = {"retry-after": f"{sim.config.faults.retry_after_s:g}"}
            return _json(429, {"errors": [{"message": "rate limited"}]}, retry)
        body = await request.body()
        batch_key: str | None = None
        stored: _Stored | None = None
        header = request.headers.get("idempotency-key")
        if header is not None and sim.config.idempotency:
            batch_key = parse_sf_string(header)
            if batch_key is None:
                count(400)
                return _json(400, {"errors": [{"message": "Idempotency-Key: not an sf-string"}]})
            body_hash = hashlib.sha256(body).hexdigest()
            now = time.monotonic()
            previous = sim.idempotency.get(batch_key)
            if previous is not None and previous.expires > now:
                if previous.status is None:
                    count(409)
                    return _json(409, {"errors": [{"message": "request still in progress"}]})
                if previous.body_hash != body_hash:
                    count(422)
                    message = "Idempotency-Key reused with a different payload"
                    return _json(422, {"errors": [{"message": message}]})
                sim.counts["replayed"] += 1
                count(previous.status)
                return Response(previous.body, previous.status, media_type="application/json")
            stored = _Stored(body_hash, now + sim.config.idempotency_ttl_s)
            sim.idempotency[batch_key] = stored
        elif header is not None:
            batch_key = parse_sf_string(header)
        try:
            status, document = await _handle(sim, request, body, batch_key, lock)
        except BaseException:
            if stored is not None and batch_key is not None:
                sim.idempotency.pop(batch_key, None)
            raise
        payload = orjson.dumps(document)
        if stored is not None:
            stored.status, stored.body = status, payload
        count(status)
        return Response(payload, status, media_type="application/json")

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
        lines = b"".join(orjson.dumps(row) + b"\n" for row in sim.accepted)
        return Response(lines, media_type="application/x-ndjson")

    async def reset(request: Request) -> Response:
        sim.reset()
        return _json(200, {"reset": True})

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            given = orjson.loads(await request.body() or b"{}")
            known = set(Faults.__dataclass_fields__)
            unknown = set(given) - known
            if unknown:
                return _json(400, {"error": f"unknown fault settings: {sorted(unknown)}"})
            sim.set_faults(Faults(**given))
        return _json(200, asdict(sim.config.faults))

    async def health(request: Request) -> Response:
        return _json(200, {"ok": True})

    app = Starlette(
        routes=[
            Route("/graphql", graphql_endpoint, methods=["POST"]),
            Route("/stats", stats),
            Route("/signals", signals),
            Route("/reset", reset, methods=["POST"]),
            Route("/admin/faults", faults, methods=["GET", "POST"]),
            Route("/healthz", health),
        ]
    )
    app.state.simulator = sim
    return _FaultMiddleware(app, sim)  # type: ignore[return-value]


async def _handle(
    sim: Simulator, request: Request, body: bytes, batch_key: str | None, lock: asyncio.Lock
) -> tuple[int, dict[str, Any]]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400, {"errors": [{"message": "body is not JSON"}]}
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return 400, {"errors": [{"message": "body needs a GraphQL query"}]}
    document = sim.document_errors(payload["query"])
    if isinstance(document, list):
        return 400, {"errors": document}
    variables = payload.get("variables") or {}
    signals, errors = sim.extract_signals(document, variables)
    if signals is None:
        return 400, {"errors": errors}
    keys: list[str | None] = [None] * len(signals)
    header = request.headers.get("signal-idempotency-keys")
    if header is not None:
        parsed = parse_sf_list(header)
        if parsed is None or len(parsed) != len(signals):
            message = "Signal-Idempotency-Keys: needs one sf-string per signal"
            return 400, {"errors": [{"message": message}]}
        keys = list(parsed)
    async with lock:
        return 200, sim.create_signals(signals, keys, batch_key)


FAULT_SCOPE_KEY: Final = "connect_sim.fault"


class _FaultMiddleware:
    """Decides each createSignals call's fault before routing.

    A dropped connection is a half-sent response followed by an error: uvicorn then
    aborts the socket and the client sees the connection die mid-response.
    """

    def __init__(self, app: Starlette, sim: Simulator) -> None:
        self.app = app
        self.state = app.state
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/graphql":
            fault = self.sim.choose_fault()
            if fault is not None:
                injected = self.sim.faults_injected
                injected[fault] = injected.get(fault, 0) + 1
            if fault == "drop":
                start = {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-length", b"1000"),
                        (b"content-type", b"application/json"),
                    ],
                }
                await send(start)
                await send({"type": "http.response.body", "body": b'{"data":', "more_body": True})
                raise ConnectionAbortedError("injected dropped connection")
            scope[FAULT_SCOPE_KEY] = fault
        await self.app(scope, receive, send)
