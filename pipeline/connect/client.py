"""Delivery of batches to Connect's createSignals: classification, retries, isolation.

``classify_response`` is pure: it turns one HTTP exchange into a verdict.
``ConnectClient.deliver`` is the I/O edge: it sends a batch, retries transient
failures with exponential backoff and full jitter (honouring Retry-After) for as
long as it takes, and isolates permanent rejections: errors that name a signal's
index reject that signal only; errors that name none split the batch in halves until
the offending signals stand alone. Transient failures never reject a signal.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import httpx
import orjson

from pipeline.connect.document import CREATE_SIGNALS, OPERATION_NAME

#: Statuses that mean "try again later", never "this signal is bad". 401/403/404 are
#: configuration problems (key, URL), not data problems: dead-lettering every event
#: because of a wrong API key would be the worst possible outcome, so they pause
#: and retry, and readiness reports the API as failing.
RETRYABLE_STATUSES: Final = frozenset({401, 403, 404, 408, 409, 425, 429, 500, 502, 503, 504})


class Verdict(StrEnum):
    ACCEPTED = "ok"  # every signal accepted
    PARTIAL = "partial"  # some signals rejected by index, the others accepted
    REJECTED_LOCATED = "rejected"  # nothing accepted; errors name the bad indices
    REJECTED_UNLOCATED = "rejected_unlocated"  # nothing accepted; no index given
    RETRY = "retryable"


@dataclass(frozen=True, slots=True)
class Classified:
    verdict: Verdict
    #: index in the request -> the server's message
    rejected: dict[int, str] = field(default_factory=dict)
    message: str = ""
    retry_after_s: float | None = None


@dataclass(slots=True)
class Batch:
    """Signals bound for one createSignals call, as pre-serialised JSON fragments."""

    keys: list[str]
    fragments: list[bytes]
    #: Opaque references the consumer uses to find the records again.
    refs: list[Any]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def body_bytes(self) -> int:
        return sum(len(f) + 1 for f in self.fragments) + _ENVELOPE_BYTES

    def subset(self, indices: Sequence[int]) -> Batch:
        return Batch(
            [self.keys[i] for i in indices],
            [self.fragments[i] for i in indices],
            [self.refs[i] for i in indices],
        )


_BODY_PREFIX: Final = (
    b'{"query":'
    + json.dumps(CREATE_SIGNALS).encode()
    + b',"operationName":"'
    + OPERATION_NAME.encode()
    + b'","variables":{"signals":['
)
_BODY_SUFFIX: Final = b"]}}"
_ENVELOPE_BYTES: Final = len(_BODY_PREFIX) + len(_BODY_SUFFIX)


def encode_signal(signal: dict[str, Any]) -> bytes:
    """One signal as a JSON fragment of the request body (escaped by the encoder).

    orjson: compact UTF-8; on a realistic stream of distinct signals about 1.5 times
    faster than ``json.dumps`` (3.7 against 5.7 µs per signal on the benchmark machine).
    It refuses unpaired surrogates and integers over 64 bits; validation already
    keeps numbers finite (orjson would write NaN as null) and within GraphQL Int.

    orjson's result keeps its whole working buffer (~8 KiB of memory for a ~0.8 KiB
    fragment); a fragment waits in a batch, so it is copied to its own size (0.4 µs).
    """
    return memoryview(orjson.dumps(signal)).tobytes()


def batch_body(fragments: Sequence[bytes]) -> bytes:
    """The request body: graphql-core's constant document, the signals as variables."""
    return _BODY_PREFIX + b",".join(fragments) + _BODY_SUFFIX


def batch_key(signal_keys: Sequence[str]) -> str:
    """The batch's Idempotency-Key: a function of exactly the signals it carries.

    A retried batch carries the same key; a re-formed batch (after isolating a bad
    signal) carries different signals and so a different key.
    """
    digest = hashlib.sha256("\n".join(signal_keys).encode()).hexdigest()
    return f"b-{digest[:48]}"


def sf_string(value: str) -> str:
    """An RFC 8941 sf-string (keys are plain ASCII by construction; escape anyway)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sf_list(values: Sequence[str]) -> str:
    """An RFC 8941 list of sf-strings, in order."""
    plain = "".join(values)
    if not values or '"' in plain or "\\" in plain:  # rare: escape key by key
        return ", ".join(sf_string(v) for v in values)
    return '"' + '", "'.join(values) + '"'  # the usual case: two joins in C, no loop


def _error_index(error: dict[str, Any]) -> int | None:
    extensions = error.get("extensions") or {}
    index = extensions.get("index")
    if isinstance(index, int) and not isinstance(index, bool):
        return index
    path = error.get("path") or []
    for i, part in enumerate(path[:-1]):
        if part == "signals" and isinstance(path[i + 1], int):
            return int(path[i + 1])
    return None


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def classify_response(status: int, headers: httpx.Headers, body: bytes, size: int) -> Classified:
    """What one createSignals response means for each signal of the request."""
    if status in RETRYABLE_STATUSES or status >= 500:
        return Classified(
            Verdict.RETRY, message=f"HTTP {status}", retry_after_s=_retry_after(headers)
        )
    try:
        document = orjson.loads(body) if body else {}
    except ValueError:
        document = None
    if not isinstance(document, dict):
        if status >= 400:
            return Classified(Verdict.REJECTED_UNLOCATED, message=f"HTTP {status}")
        # A 2xx that is not GraphQL JSON (a proxy page): nothing is known, try again.
        return Classified(Verdict.RETRY, message=f"HTTP {status}: not a GraphQL response")
    errors = [e for e in document.get("errors") or [] if isinstance(e, dict)]
    data = document.get("data")
    accepted_any = isinstance(data, dict) and data.get("createSignals") is not None
    if status < 400 and not errors and accepted_any:
        return Classified(Verdict.ACCEPTED)
    located: dict[int, str] = {}
    unlocated: list[str] = []
    for error in errors:
        index = _error_index(error)
        message = str(error.get("message", "rejected"))
        if index is not None and 0 <= index < size:
            located.setdefault(index, message)
        else:
            unlocated.append(message)
    if located and not unlocated:
        verdict = Verdict.PARTIAL if accepted_any else Verdict.REJECTED_LOCATED
        return Classified(verdict, located)
    message = "; ".join(unlocated) or f"HTTP {status}: no createSignals result"
    return Classified(Verdict.REJECTED_UNLOCATED, message=message[:2000])


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Full jitter, never shorter than the server's Retry-After."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * (2 ** min(attempt, 30)))
        delay = rng.uniform(0, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_backoff_s * 4))
        return delay


@dataclass(slots=True)
class DeliveryReport:
    """The end of one batch: which signals were rejected for good (index -> message)."""

    batch: Batch
    rejected: dict[int, str] = field(default_factory=dict)
    abandoned: bool = False  # shutdown came first: nothing is known, commit nothing
    calls: int = 0
    retries: int = 0


#: Called on every attempt: (verdict or error kind, seconds the call took, signals).
CallObserver = Callable[[str, float, int], None]


class ConnectClient:
    """Sends batches to the createSignals endpoint. Thread-safe; one per process."""

    def __init__(
        self,
        url: str,
        auth_header: str | None,
        auth_value: str | None,
        *,
        timeout_s: float,
        max_connections: int,
        retry: RetryPolicy,
        stop: threading.Event,
        on_call: CallObserver | None = None,
        on_failing: Callable[[bool], None] | None = None,
        seed: int | None = None,
    ) -> None:
        headers = {"content-type": "application/json"}
        if auth_header and auth_value:
            headers[auth_header] = auth_value
        self._url = url
        self._client = httpx.Client(
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._retry = retry
        self._stop = stop
        self._on_call = on_call or (lambda outcome, seconds, n: None)
        self._on_failing = on_failing or (lambda failing: None)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def _post(self, batch: Batch) -> tuple[Classified, str]:
        headers = {
            "Idempotency-Key": sf_string(batch_key(batch.keys)),
            "Signal-Idempotency-Keys": sf_list(batch.keys),
        }
        started = time.perf_counter()
        try:
            response = self._client.post(
                self._url, content=batch_body(batch.fragments), headers=headers
            )
        except httpx.TimeoutException as error:
            outcome = Classified(Verdict.RETRY, message=f"timeout: {type(error).__name__}")
            self._on_call("timeout", time.perf_counter() - started, len(batch))
            return outcome, "timeout"
        except httpx.HTTPError as error:
            outcome = Classified(Verdict.RETRY, message=f"network error: {type(error).__name__}")
            self._on_call("network_error", time.perf_counter() - started, len(batch))
            return outcome, "network_error"
        outcome = classify_response(
            response.status_code, response.headers, response.content, len(batch)
        )
        self._on_call(str(outcome.verdict), time.perf_counter() - started, len(batch))
        return outcome, str(outcome.verdict)

    def _send_until_answered(self, batch: Batch, report: DeliveryReport) -> Classified | None:
        """Retry transient failures until a definite answer, or None on shutdown."""
        attempt = 0
        while True:
            outcome, _ = self._post(batch)
            report.calls += 1
            if outcome.verdict is not Verdict.RETRY:
                if attempt:
                    self._on_failing(False)
                return outcome
            self._on_failing(True)
            with self._rng_lock:
                delay = self._retry.delay(attempt, outcome.retry_after_s, self._rng)
            attempt += 1
            report.retries += 1
            if self._stop.wait(delay):
                return None

    def deliver(self, batch: Batch) -> DeliveryReport:
        """Deliver a batch; permanent rejections are isolated to the offending signals."""
        report = DeliveryReport(batch)
        whole = list(range(len(batch)))
        pending: list[list[int]] = [whole]
        while pending:
            indices = pending.pop()
            part = batch if indices is whole else batch.subset(indices)
            outcome = self._send_until_answered(part, report)
            if outcome is None:
                report.abandoned = True
                return report
            if outcome.verdict in (Verdict.ACCEPTED, Verdict.PARTIAL):
                for local, message in outcome.rejected.items():
                    report.rejected[indices[local]] = message
            elif outcome.verdict is Verdict.REJECTED_LOCATED:
                # Nothing was recorded: reject the named ones, resend the rest as a new
                # batch (new signals set, new Idempotency-Key).
                for local, message in outcome.rejected.items():
                    report.rejected[indices[local]] = message
                rest = [i for n, i in enumerate(indices) if n not in outcome.rejected]
                if rest:
                    pending.append(rest)
            elif len(indices) == 1:
                report.rejected[indices[0]] = outcome.message
            else:
                middle = len(indices) // 2
                pending.extend([indices[middle:], indices[:middle]])
        return report
