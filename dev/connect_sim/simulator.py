"""The simulator's core: one createSignals request body in, status and document out.

No I/O here (connect_sim.app is the HTTP edge): the GraphQL document is parsed and
validated once per query text, the signals are checked against the SDL's shape and
the rules (connect_sim.shape, connect_sim.rules), counted, and recorded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
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

from connect_sim.faults import FaultPlan, Faults
from connect_sim.headers import parse_sf_list
from connect_sim.idempotency import IdempotencyStore
from connect_sim.rules import VALUE_RULES, signal_problems
from connect_sim.shape import Checker, compile_input, literal_value

SDL_PATH: Final = Path(__file__).with_name("schema.graphql")
# Literal values are checked by connect_sim.shape, per signal and with its index.
DOCUMENT_RULES: Final = tuple(r for r in specified_rules if r is not ValuesOfCorrectTypeRule)
DOCUMENT_CACHE_SIZE: Final = 256


@dataclass
class Config:
    api_key: str = "sim-api-key"
    auth_header: str = "X-API-Key"  # as Connect's API; "Authorization" + "Bearer" also work
    auth_scheme: str = ""  # "" expects the bare key
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
