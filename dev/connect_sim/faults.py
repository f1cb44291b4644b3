"""Fault injection: what goes wrong with each createSignals call, decided under a seed.

Every decision comes from one ``random.Random(seed)`` in request arrival order, so
a sequence of calls meets the same faults on every run with the same seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any, Final

import orjson

#: The fault names a call can meet (also the keys of /stats "faults").
DROP: Final = "drop"  # the connection dies mid-response before anything is recorded
DROP_AFTER: Final = "drop_after"  # ... after the signals were recorded (the client can't know)
TIMEOUT: Final = "timeout"  # the server hangs timeout_s before answering
RATE_LIMITED: Final = "429"
SERVER_ERRORS: Final = ("500", "502", "503")
# Answers a client cannot take at face value (issue 12), each in a 200 unless named:
GRAPHQL_ERROR: Final = "graphql_error"  # "graphql_error:<code>": data null, one coded error
MALFORMED: Final = "malformed"  # "malformed:<shape>": a body of the wrong shape
PROXY_407: Final = "407"  # a proxy's HTML page asking for proxy credentials
GATEWAY_TIMEOUT: Final = "504"  # a gateway gave up on the backend; nothing recorded

#: Codes GraphQL servers use for "try later" (the ``any`` choice draws from these).
TRANSIENT_CODES: Final = (
    "THROTTLED",
    "RATE_LIMITED",
    "INTERNAL_SERVER_ERROR",
    "SERVICE_UNAVAILABLE",
    "UNAUTHENTICATED",
    "FORBIDDEN",
)
#: Malformed answers by name: (status, content type, body).
MALFORMED_SHAPES: Final[dict[str, tuple[int, str, bytes]]] = {
    "empty": (200, "application/json", b""),
    "data_null": (200, "application/json", b'{"data":null}'),
    "html": (200, "text/html", b"<html><body><h1>Service temporarily moved</h1></body></html>"),
    "errors_number": (200, "application/json", b'{"data":null,"errors":5}'),
    "extensions_string": (
        200,
        "application/json",
        b'{"data":null,"errors":[{"message":"x","extensions":"x"}]}',
    ),
    "errors_null": (200, "application/json", b'{"data":null,"errors":[null]}'),
    "json_array": (200, "application/json", b'[{"data":null}]'),
    "invalid_utf8": (
        200,
        "application/json",
        b'{"data":{"createSignals":{"signalIds":["sig-' + bytes([0xFF, 0xFE]) + b'"]}}}',
    ),
    "truncated": (200, "application/json", b'{"data":{"createSignals":{"signalIds":["sig-'),
}
PROXY_PAGE: Final = (
    b"<html><head><title>407 Proxy Authentication Required</title></head>"
    b"<body><h1>Proxy Authentication Required</h1></body></html>"
)
GATEWAY_PAGE: Final = b"<html><body><h1>504 Gateway Time-out</h1></body></html>"
ANY: Final = "any"
#: Every fault a burst can name (graphql_error and malformed take their setting's choice).
BURST_FAULTS: Final = (
    DROP,
    DROP_AFTER,
    TIMEOUT,
    RATE_LIMITED,
    *SERVER_ERRORS,
    GRAPHQL_ERROR,
    MALFORMED,
    PROXY_407,
    GATEWAY_TIMEOUT,
)


def graphql_error_body(code: str) -> bytes:
    """A 200's body: no result, one error coded ``code`` and naming no signal."""
    error = {"message": f"injected {code}", "extensions": {"code": code}}
    return orjson.dumps({"data": None, "errors": [error]})


@dataclass
class Faults:
    """The fault settings; settable at start (CLI) and at run time (/admin/faults)."""

    seed: int = 0
    error_rate: float = 0.0  # probability of 500/502/503 (one of them, uniformly)
    rate_limit_rate: float = 0.0  # probability of 429
    rate_limit_burst: int = 0  # the next N calls get 429
    retry_after_s: float = 0.2  # the Retry-After of a 429
    latency_ms: float = 0.0  # processing time added to every call
    latency_jitter_ms: float = 0.0  # plus a uniform random share of this
    drop_connection_rate: float = 0.0  # probability of DROP
    drop_after_processing_rate: float = 0.0  # probability of DROP_AFTER
    timeout_rate: float = 0.0  # probability of TIMEOUT
    timeout_s: float = 30.0
    reject_whole_batch: bool = False  # any invalid signal rejects the whole batch
    graphql_error_rate: float = 0.0  # probability of a 200 with one coded GraphQL error
    graphql_error_code: str = "THROTTLED"  # its extensions.code ("any": a transient one)
    malformed_rate: float = 0.0  # probability of a malformed answer
    malformed_shape: str = ANY  # one of MALFORMED_SHAPES, or "any"
    proxy_407_rate: float = 0.0  # probability of a proxy's 407 HTML page
    gateway_timeout_rate: float = 0.0  # probability of a 504 (nothing recorded)
    gateway_timeout_over_signals: int = 0  # calls with more signals get 504 (0: off)
    burst: int = 0  # the next N calls meet burst_fault
    burst_fault: str = MALFORMED  # one of BURST_FAULTS

    @classmethod
    def from_json(cls, given: dict[str, Any]) -> Faults:
        """Settings from a JSON object; unknown names or wrong types raise ValueError."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"unknown fault settings: {unknown}")
        for name, value in given.items():
            wanted = known[name]
            ok = (
                isinstance(value, bool)
                if wanted == "bool"
                else isinstance(value, int | float) and not isinstance(value, bool)
            )
            if wanted == "int" and ok:
                ok = isinstance(value, int)
            if wanted == "str":
                ok = isinstance(value, str)
            if not ok or (wanted not in ("bool", "str") and value < 0):
                raise ValueError(f"{name}: must be a non-negative {wanted}")
        faults = cls(**given)
        faults.check()
        return faults

    def check(self) -> None:
        """ValueError when a named choice is not one the simulator knows."""
        if self.malformed_shape != ANY and self.malformed_shape not in MALFORMED_SHAPES:
            known = ", ".join([ANY, *MALFORMED_SHAPES])
            raise ValueError(f"malformed_shape: one of {known}")
        if self.burst_fault not in BURST_FAULTS:
            raise ValueError(f"burst_fault: one of {', '.join(BURST_FAULTS)}")
        if not self.graphql_error_code:
            raise ValueError("graphql_error_code: a code, or 'any'")


class FaultPlan:
    """Draws each call's fault and latency from the seeded generator."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)
        # The answer faults draw from their own generators: the sequence of the others
        # under a seed is the same as before they existed.
        self.answers_rng = random.Random(f"{faults.seed}:answers")
        self.choice_rng = random.Random(f"{faults.seed}:choices")
        self.burst_left = faults.rate_limit_burst
        self.fault_burst_left = faults.burst

    def next_fault(self) -> str | None:
        f, r = self.faults, self.rng
        if self.fault_burst_left > 0:
            self.fault_burst_left -= 1
            return self._detailed(f.burst_fault)
        if self.burst_left > 0:
            self.burst_left -= 1
            return RATE_LIMITED
        # Always five draws, so one setting never shifts the sequence of another.
        drop, timeout, error, limit, drop_after = (r.random() for _ in range(5))
        if drop < f.drop_connection_rate:
            return DROP
        if timeout < f.timeout_rate:
            return TIMEOUT
        if error < f.error_rate:
            return r.choice(SERVER_ERRORS)
        if limit < f.rate_limit_rate:
            return RATE_LIMITED
        if drop_after < f.drop_after_processing_rate:
            return DROP_AFTER
        a = self.answers_rng
        coded, malformed, proxy, gateway = (a.random() for _ in range(4))
        if coded < f.graphql_error_rate:
            return self._detailed(GRAPHQL_ERROR)
        if malformed < f.malformed_rate:
            return self._detailed(MALFORMED)
        if proxy < f.proxy_407_rate:
            return PROXY_407
        if gateway < f.gateway_timeout_rate:
            return GATEWAY_TIMEOUT
        return None

    def _detailed(self, fault: str) -> str:
        """graphql_error and malformed with their code or shape: "malformed:empty"."""
        f = self.faults
        if fault == GRAPHQL_ERROR:
            code = f.graphql_error_code
            return f"{fault}:{self.choice_rng.choice(TRANSIENT_CODES) if code == ANY else code}"
        if fault == MALFORMED:
            shape = f.malformed_shape
            chosen = self.choice_rng.choice(list(MALFORMED_SHAPES)) if shape == ANY else shape
            return f"{fault}:{chosen}"
        return fault

    def latency_s(self) -> float:
        f = self.faults
        jitter = self.rng.uniform(0, f.latency_jitter_ms) if f.latency_jitter_ms else 0.0
        return (f.latency_ms + jitter) / 1000


#: An injected answer: status, headers, body.
Answer = tuple[int, dict[str, str], bytes]
_JSON: Final = {"content-type": "application/json"}
_HTML: Final = {"content-type": "text/html"}


def answer_for(fault: str | None) -> Answer | None:
    """The canned answer of an answer fault (graphql_error, malformed, 407, 504)."""
    if fault is None:
        return None
    kind, _, detail = fault.partition(":")
    if kind == GRAPHQL_ERROR:
        return 200, dict(_JSON), graphql_error_body(detail)
    if kind == MALFORMED:
        status, content_type, body = MALFORMED_SHAPES[detail]
        return status, {"content-type": content_type}, body
    if kind == PROXY_407:
        return 407, {**_HTML, "proxy-authenticate": 'Basic realm="proxy"'}, PROXY_PAGE
    if kind == GATEWAY_TIMEOUT:
        return gateway_timeout_answer()
    return None


def gateway_timeout_answer() -> Answer:
    return 504, dict(_HTML), GATEWAY_PAGE
