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
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    ValueNode,
    VariableNode,
    build_schema,
    parse,
    specified_rules,
    validate,
)
from graphql.validation import ValuesOfCorrectTypeRule
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connect_sim import faults as fault_names
from connect_sim.faults import FaultPlan, Faults
from connect_sim.headers import parse_sf_list, parse_sf_string
from connect_sim.idempotency import IdempotencyStore, Verdict
from connect_sim.rules import VALUE_RULES, signal_problems
from connect_sim.shape import Checker, compile_input, literal_value

SDL_PATH: Final = Path(__file__).with_name("schema.graphql")
# Literal values are checked by connect_sim.shape, per signal and with its index.
DOCUMENT_RULES: Final = tuple(r for r in specified_rules if r is not ValuesOfCorrectTypeRule)
DOCUMENT_CACHE_SIZE: Final = 256


@dataclass
class Config:
    api_key: str = "sim-api-key"
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"  # "" expects the bare key
    app_keys: frozenset[str] = frozenset({"sim-app-key"})
    idempotency: bool = True
    idempotency_ttl_s: float = 3600.0
    idempotency_max_keys: int = 100_000  # oldest keys go first beyond this (memory bound)
    record_limit: int | None = None  # keep about the latest N accepted signals for /signals
    faults: Faults = field(default_factory=Faults)

    @property
    def expected_auth(self) -> bytes:
        scheme = self.auth_scheme.strip()
        return (f"{scheme} {self.api_key}" if scheme else self.api_key).encode()


@dataclass(frozen=True)
class Plan:
    """What a cached GraphQL document asks: where the signals are, what to answer."""

    response_key: str  # createSignals or its alias
    argument: ValueNode  # the signals argument
    variable: str | None  # its variable's name in the variables form
    selections: tuple[tuple[str, str], ...]  # (response key, field name) of the result


#: An accepted request as recorded: body, Signal-Idempotency-Keys header, batch key,
#: receive time, indexes of its rejected signals, number accepted. Plain atoms only,
#: so the garbage collector untracks it.
Record = tuple[bytes, str | None, str | None, float, tuple[int, ...], int]


class RequestError(Exception):
    """A request the server answers with 400 and these GraphQL errors."""

    def __init__(self, *messages: str) -> None:
        super().__init__(messages)
        self.errors = [{"message": m} for m in messages]


def _plan(schema: GraphQLSchema, query: str, operation_name: str | None) -> Plan:
    try:
        document = parse(query)
    except GraphQLError as error:
        raise RequestError(error.message) from None
    errors = validate(schema, document, DOCUMENT_RULES)
    if errors:
        raise RequestError(*(e.message for e in errors))
    operation = _operation(document, operation_name)
    if operation.operation is not OperationType.MUTATION:
        raise RequestError("only the createSignals mutation is served")
    fields = [s for s in operation.selection_set.selections if isinstance(s, FieldNode)]
    creates = [f for f in fields if f.name.value == "createSignals"]
    if len(creates) != 1 or len(fields) != 1:
        raise RequestError("a request carries exactly one createSignals field")
    (create,) = creates
    argument = next(a.value for a in create.arguments or () if a.name.value == "signals")
    variable = argument.name.value if isinstance(argument, VariableNode) else None
    selections = tuple(
        ((s.alias or s.name).value, s.name.value)
        for s in (create.selection_set.selections if create.selection_set else ())
        if isinstance(s, FieldNode)
    )
    return Plan((create.alias or create.name).value, argument, variable, selections)


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is not None:
        named = [o for o in operations if o.name is not None and o.name.value == name]
        if len(named) != 1:
            raise RequestError(f"no operation named {name!r}")
        return named[0]
    if len(operations) != 1:
        raise RequestError("several operations: operationName is required")
    return operations[0]


def signal_error(index: int, field_path: str, rule: str) -> dict[str, Any]:
    """A GraphQL error naming the signal's index and field, in message and path."""
    parts: list[str | int] = ["createSignals", "signals", index]
    for part in field_path.replace("[", ".[").split("."):
        if part:
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
        mutation = self.schema.mutation_type
        assert mutation is not None
        signals_type = mutation.fields["createSignals"].args["signals"].type
        assert isinstance(signals_type, GraphQLNonNull)
        assert isinstance(signals_type.of_type, GraphQLList)
        rules = {"SignalContentInput": VALUE_RULES, "ItemInput": VALUE_RULES}
        self.check_signal: Checker = compile_input(signals_type.of_type.of_type, rules)
        self.plans: dict[tuple[str, str | None], Plan | RequestError] = {}
        self.reset()

    def reset(self) -> None:
        # What was accepted, kept as the request body it came in (no copy, no container
        # per signal for the garbage collector to traverse); /signals renders it.
        self.records: deque[Record] = deque()
        self.recorded_signals = 0
        self.keys_seen: set[str] = set()
        self.counts = {"accepted": 0, "rejected": 0, "duplicates": 0, "replayed": 0}
        self.statuses: dict[str, int] = {}
        self.faults_injected: dict[str, int] = {}
        self.store = IdempotencyStore(
            self.config.idempotency_ttl_s, self.config.idempotency_max_keys
        )
        self.plan = FaultPlan(self.config.faults)
        self.next_id = 0

    def set_faults(self, faults: Faults) -> None:
        self.config.faults = faults
        self.plan = FaultPlan(faults)

    def set_idempotency(self, enabled: bool, ttl_s: float) -> None:
        self.config.idempotency, self.config.idempotency_ttl_s = enabled, ttl_s
        self.store.ttl_s = ttl_s

    def count_status(self, status: int) -> None:
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1

    # --- the mutation ---------------------------------------------------------------

    def plan_for(self, query: str, operation_name: str | None) -> Plan:
        """The parsed and validated document, cached by its text (the pipeline's repeats)."""
        cache_key = (query, operation_name)
        plan = self.plans.get(cache_key)
        if plan is None:
            try:
                plan = _plan(self.schema, query, operation_name)
            except RequestError as error:
                plan = error
            if len(self.plans) >= DOCUMENT_CACHE_SIZE:
                self.plans.pop(next(iter(self.plans)))
            self.plans[cache_key] = plan
        if isinstance(plan, RequestError):
            raise plan
        return plan

    def signals_of(self, payload: Any) -> tuple[Plan, list[Any]]:
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            raise RequestError("the body needs a GraphQL query")
        variables = payload.get("variables") or {}
        operation_name = payload.get("operationName")
        if not isinstance(variables, dict):
            raise RequestError("variables must be an object")
        if operation_name is not None and not isinstance(operation_name, str):
            raise RequestError("operationName must be a string")
        plan = self.plan_for(payload["query"], operation_name)
        if plan.variable is not None:
            signals = variables.get(plan.variable)
        else:
            signals = literal_value(plan.argument, variables)
        if not isinstance(signals, list):
            raise RequestError(f"signals: must be a list of SignalInput, got {signals!r:.80}")
        return plan, signals

    def create_signals(
        self,
        plan: Plan,
        signals: list[Any],
        keys: list[str] | list[None],
        batch_key: str | None,
    ) -> tuple[dict[str, Any], set[int]]:
        """The response document, and the indexes of the rejected signals."""
        errors: list[dict[str, Any]] = []
        bad: set[int] = set()
        app_keys = self.config.app_keys
        for i, signal in enumerate(signals):
            problems: list[tuple[str, str]] = []
            if type(signal) is dict:
                self.check_signal(signal, "", problems)
                problems.extend(signal_problems(signal, app_keys))
            else:
                problems.append(("", "must be an object (SignalInput)"))
            if problems:
                bad.add(i)
                errors.extend(signal_error(i, path, rule) for path, rule in problems)
        self.counts["rejected"] += len(bad)
        if bad and self.config.faults.reject_whole_batch:
            return {"data": None, "errors": errors}, set(range(len(signals)))
        ids: list[str | None] = []
        for i in range(len(signals)):
            if i in bad:
                ids.append(None)
                continue
            key = keys[i]
            if key is not None:
                if key in self.keys_seen:
                    self.counts["duplicates"] += 1
                else:
                    self.keys_seen.add(key)
            self.next_id += 1
            ids.append(f"sig-{self.next_id}")
        self.counts["accepted"] += len(signals) - len(bad)
        result = {
            response_key: ids if name == "signalIds" else "CreateSignalsResult"
            for response_key, name in plan.selections
        }
        document: dict[str, Any] = {"data": {plan.response_key: result}}
        if errors:
            document["errors"] = errors
        return document, bad

    def answer(
        self, body: bytes, key_header: str | None, batch_key: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Status and JSON document for one createSignals body (no I/O)."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, {"errors": [{"message": "the body is not JSON"}]}
        try:
            plan, signals = self.signals_of(payload)
        except RequestError as error:
            return 400, {"errors": error.errors}
        keys: list[str] | list[None] = [None] * len(signals)
        if key_header is not None:
            parsed = parse_sf_list(key_header)
            if parsed is None or len(parsed) != len(signals):
                message = "Signal-Idempotency-Keys: needs one sf-string per signal, in order"
                return 400, {"errors": [{"message": message}]}
            keys = parsed
        document, bad = self.create_signals(plan, signals, keys, batch_key)
        if len(bad) < len(signals):
            accepted = len(signals) - len(bad)
            self.record((body, key_header, batch_key, time.time(), tuple(sorted(bad)), accepted))
        return 200, document

    def record(self, record: Record) -> None:
        self.records.append(record)
        self.recorded_signals += record[5]
        limit = self.config.record_limit
        while limit is not None and self.recorded_signals > limit and len(self.records) > 1:
            self.recorded_signals -= self.records.popleft()[5]

    def accepted_lines(self) -> Iterator[bytes]:
        """Every recorded signal as a JSON line: key, batchKey, receivedAt, signal."""
        for body, key_header, batch_key, received_at, bad, _ in self.records:
            _, signals = self.signals_of(orjson.loads(body))
            keys = parse_sf_list(key_header) if key_header is not None else None
            rejected = set(bad)
            for i, signal in enumerate(signals):
                if i not in rejected:
                    row = {
                        "key": keys[i] if keys is not None else None,
                        "batchKey": batch_key,
                        "receivedAt": received_at,
                        "signal": signal,
                    }
                    yield orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)


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
    if fault in fault_names.SERVER_ERRORS:
        return _error(int(fault), "injected failure")
    if fault == fault_names.RATE_LIMITED:
        return _error(429, "rate limited", {"retry-after": f"{config.faults.retry_after_s:g}"})
    body = await request.body()
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
