"""Delivery of batches to Connect's createSignals: retries and isolation.

``classify_response`` (responses.py) turns one HTTP exchange into a verdict by the
rule table ``RULES``; request.py builds what is sent. ``ConnectClient.deliver`` is the
I/O edge: it sends a batch, retries transient failures and answers it cannot read
with the same Idempotency-Key, with exponential backoff and full jitter (honouring
Retry-After) for as long as it takes, and isolates permanent rejections: errors that
name a signal's index reject that signal only; permanent errors that name none split
the batch in halves until the offending signals stand alone. Transient failures never
reject a signal, and no exception ever leaves a delivery thread.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import structlog

from pipeline.connect.request import (
    Batch,
    batch_body,
    batch_key,
    encode_signal,
    sf_list,
    sf_string,
)
from pipeline.connect.responses import (
    CLIENT_ERROR_STATUSES,
    PERMANENT_CODES,
    RETRYABLE_STATUSES,
    RULES,
    SAME_BATCH_AGAIN,
    SLOW_STATUSES,
    Classified,
    Rule,
    Verdict,
    classify_response,
    rules_markdown,
)
from pipeline.connect.wire import lean_transport, read_body
from pipeline.ops import tracing

#: the request and response names stay importable from here
__all__ = [
    "BACKPRESSURE_STATUSES",
    "CLIENT_ERROR",
    "CLIENT_ERROR_STATUSES",
    "NETWORK_ERROR",
    "PERMANENT_CODES",
    "RETRYABLE_STATUSES",
    "RULES",
    "SAME_BATCH_AGAIN",
    "SLOW_STATUSES",
    "TIMEOUT",
    "AnswerObserver",
    "Batch",
    "CallObserver",
    "Classified",
    "ConnectClient",
    "DeliveryReport",
    "RecordHeaders",
    "RetryPolicy",
    "Rule",
    "Transport",
    "Verdict",
    "batch_body",
    "batch_key",
    "classify_response",
    "encode_signal",
    "is_backpressure",
    "rules_markdown",
    "sf_list",
    "sf_string",
]

log = structlog.get_logger("pipeline.connect.client")


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
    #: times a part of the batch was split because it kept timing out (or got 504)
    slow_splits: int = 0
    #: attempts that raised inside the client (classified as retries)
    errors: int = 0
    #: the API was failing at this batch's last attempt (on_failing told so)
    failing: bool = False
    #: abandoned: the indices whose outcome is unknown (None: all of them); the others
    #: were answered (accepted, or in ``rejected``) before the shutdown came
    unsettled: list[int] | None = None


#: Called on every attempt: (verdict or error kind, seconds the call took, signals).
CallObserver = Callable[[str, float, int], None]
#: What the client sends a request with: (url, body, headers) -> the response, its
#: body not yet read (``read_body`` reads it within the call's deadline).
Transport = Callable[[str, bytes, dict[str, str]], httpx.Response]
#: Called on every attempt: (back-pressure or not, seconds the call took); adaptive
#: concurrency (``pipeline.connect.concurrency``) learns from it.
AnswerObserver = Callable[[bool, float], object]
#: A batch's ref -> its record's Kafka headers (for the producer's traceparent).
RecordHeaders = Callable[[Any], tracing.Headers | None]

#: on_call outcomes besides the verdicts
TIMEOUT: Final = "timeout"
NETWORK_ERROR: Final = "network_error"
CLIENT_ERROR: Final = "error"  # an exception inside the attempt (a bug, a library's)

#: Answers that mean "too much, slow down" (with timeouts and 504s, ``slow``).
BACKPRESSURE_STATUSES: Final = frozenset({429, 503})
BACKPRESSURE_CODES: Final = ("THROTTLED", "RATE_LIMITED")


def is_backpressure(status: int | None, outcome: Classified) -> bool:
    """Whether an answer asks for fewer calls: 429, 503, a GraphQL THROTTLED or
    RATE_LIMITED error, a timeout or a 504."""
    if outcome.slow or status in BACKPRESSURE_STATUSES:
        return True
    if outcome.rule in (Rule.TRANSIENT_ERROR, Rule.TRANSIENT_SOME_ACCEPTED):
        return any(code in outcome.message for code in BACKPRESSURE_CODES)
    return False


def _accepted_count(outcome: Classified, size: int) -> int | None:
    """How many signals of the call Connect accepted (None: not known)."""
    if outcome.verdict in (Verdict.ACCEPTED, Verdict.PARTIAL):
        return size - len(outcome.rejected)
    if outcome.verdict in (Verdict.ACCEPTED_SOME, Verdict.REJECTED_UNLOCATED):
        return len(outcome.accepted)
    return 0 if outcome.verdict is Verdict.REJECTED_LOCATED else None


class _TooSlow:
    """_send_until_answered's answer when a part keeps timing out: split it."""


_TOO_SLOW: Final = _TooSlow()


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
        split_after_timeouts: int = 3,
        transport: Transport | None = None,
        record_headers: RecordHeaders | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        headers = {"content-type": "application/json"}
        if auth_header and auth_value:
            headers[auth_header] = auth_value
        self._url = url
        self._client = httpx.Client(
            headers=headers,
            verify=verify,  # the runner passes a no-CA context for plain http
            timeout=timeout_s,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        # The lean path: the client's pool (or the proxy its environment names) sent to
        # directly, with the client's headers and timeout; what the client adds besides
        # (URL merging, auth and redirect hooks, a cookie jar, a log line) a call to one
        # fixed URL does not need, at ~0.3 ms a call.
        parsed = httpx.URL(url)
        self._pool = self._client._transport_for_url(parsed)
        self._base_headers = dict(self._client.headers)
        self._timeouts = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        self._lean = lean_transport(
            parsed,
            self._base_headers,
            timeout_s,
            self._pool,
            direct=self._pool is self._client._transport,
        )
        self._transport: Transport = transport or self._lean or self._http_post
        self._retry = retry
        self._stop = stop
        self._on_call = on_call or (lambda outcome, seconds, n: None)
        self._on_failing = on_failing or (lambda failing: None)
        self._timeout_s = timeout_s
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._split_after_timeouts = split_after_timeouts
        self._record_headers = record_headers or (lambda ref: None)
        #: told of every answer (set by the consumer when concurrency adapts)
        self.on_answer: AnswerObserver | None = None

    def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
        self._client.close()

    def _http_post(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        request = httpx.Request(
            "POST",
            url,
            content=body,
            headers={**self._base_headers, **headers},
            extensions=self._timeouts,
        )
        return self._pool.handle_request(request)

    def _post(self, batch: Batch) -> Classified:
        """One call. Never raises: whatever goes wrong is a classified retry."""
        if tracing.enabled():  # off: this check is all a call pays
            return self._traced_post(batch)
        return self._attempt(batch)[0]

    def _traced_post(self, batch: Batch) -> Classified:
        """One call in a span linked to its records' producers (their traceparent)."""
        answer: tuple[Classified, str] | None = None
        try:
            headers = map(self._record_headers, batch.refs)
            with tracing.batch_call(len(batch), batch.body_bytes, headers) as span:
                answer = self._attempt(batch)
                outcome, kind = answer
                tracing.set_outcome(span, kind, _accepted_count(outcome, len(batch)))
        except Exception as error:  # tracing must never change what is delivered
            log.warning("tracing a call failed", exc_info=error)
        return (answer or self._attempt(batch))[0]

    def _attempt(self, batch: Batch) -> tuple[Classified, str]:
        """Send once; the verdict and the on_call outcome label. Never raises."""
        started = time.perf_counter()
        status: int | None = None
        try:
            outcome, kind, status = self._exchange(batch)
        except Exception as error:  # the delivery thread must survive anything
            log.warning(
                "delivery attempt failed; the batch is retried",
                signals=len(batch),
                error=f"{type(error).__name__}: {error}",
                exc_info=error,
            )
            message = f"{CLIENT_ERROR}: {type(error).__name__}"
            outcome, kind = Classified(Verdict.RETRY, message=message, raised=True), CLIENT_ERROR
        seconds = time.perf_counter() - started
        try:
            self._on_call(kind, seconds, len(batch))
            if self.on_answer is not None:
                self.on_answer(is_backpressure(status, outcome), seconds)
        except Exception as error:  # metrics failing must not change what was delivered
            log.warning("call observer failed", exc_info=error)
        return outcome, kind

    def _exchange(self, batch: Batch) -> tuple[Classified, str, int | None]:
        """Send once and classify: the verdict, the on_call outcome label, the status."""
        headers = {
            "Idempotency-Key": sf_string(batch_key(batch.keys)),
            "Signal-Idempotency-Keys": sf_list(batch.keys),
        }
        deadline = time.monotonic() + self._timeout_s
        try:
            response = self._transport(self._url, batch_body(batch.fragments), headers)
            content = read_body(response, deadline)
        except httpx.TimeoutException as error:
            message = f"timeout: {type(error).__name__}"
            return Classified(Verdict.RETRY, message=message, slow=True), TIMEOUT, None
        except httpx.HTTPError as error:
            message = f"network error: {type(error).__name__}"
            return Classified(Verdict.RETRY, message=message), NETWORK_ERROR, None
        outcome = classify_response(response.status_code, response.headers, content, len(batch))
        return outcome, str(outcome.verdict), response.status_code

    def _failing(self, report: DeliveryReport, failing: bool) -> None:
        if failing != report.failing:
            report.failing = failing
            self._on_failing(failing)

    def _backoff(self, attempt: int, retry_after_s: float | None) -> bool:
        """Wait before the next attempt; False when shutdown came first."""
        with self._rng_lock:
            delay = self._retry.delay(attempt, retry_after_s, self._rng)
        return not self._stop.wait(delay)

    def _send_until_answered(
        self, batch: Batch, report: DeliveryReport
    ) -> Classified | _TooSlow | None:
        """Retry the same request until a definite answer; None on shutdown, _TOO_SLOW
        when a batch of several signals timed out (or got 504) too many times in a row."""
        attempt = 0
        slow_in_a_row = 0
        while True:
            outcome = self._post(batch)
            report.calls += 1
            report.errors += outcome.raised
            if outcome.verdict not in SAME_BATCH_AGAIN:
                self._failing(report, outcome.verdict is Verdict.ACCEPTED_SOME)
                return outcome
            self._failing(report, True)
            slow_in_a_row = slow_in_a_row + 1 if outcome.slow else 0
            limit = self._split_after_timeouts
            if limit and slow_in_a_row >= limit and len(batch) > 1:
                return _TOO_SLOW
            if not self._backoff(attempt, outcome.retry_after_s):
                return None
            attempt += 1
            report.retries += 1

    def deliver(self, batch: Batch) -> DeliveryReport:
        """Deliver a batch; permanent rejections are isolated to the offending signals.

        Never raises: a failure of the bookkeeping itself (a bug) is logged and the
        whole batch delivered again (the same keys: the server replays what it knows).
        """
        attempt = 0
        while True:
            report = DeliveryReport(batch)
            try:
                return self._deliver(batch, report)
            except Exception as error:
                log.error("delivery failed; the batch is retried", exc_info=error)
            if not self._backoff(attempt, None):
                report.abandoned = True
                return report
            attempt += 1

    def _deliver(self, batch: Batch, report: DeliveryReport) -> DeliveryReport:
        whole = list(range(len(batch)))
        pending: list[list[int]] = [whole]
        resends = 0
        while pending:
            indices = pending.pop()
            part = batch if indices is whole else batch.subset(indices)
            outcome = self._send_until_answered(part, report)
            if outcome is None:
                report.abandoned = True
                report.unsettled = [*indices, *(i for part in pending for i in part)]
                return report
            if isinstance(outcome, _TooSlow):
                # Smaller calls (new keys): a timed-out call may have been recorded, so
                # this can duplicate; the per-signal keys let Connect tell.
                report.slow_splits += 1
                log.warning("a batch keeps timing out: split", signals=len(indices))
                middle = len(indices) // 2
                pending.extend([indices[middle:], indices[:middle]])
                continue
            for local, message in outcome.rejected.items():
                report.rejected[indices[local]] = message
            if outcome.verdict in (Verdict.ACCEPTED, Verdict.PARTIAL):
                continue
            done = outcome.rejected.keys() | outcome.accepted
            rest = [i for n, i in enumerate(indices) if n not in done]
            if not rest:
                continue
            if outcome.verdict is Verdict.ACCEPTED_SOME:
                # Transient for the rest: after a backoff, as a new batch (new key).
                if not self._backoff(resends, outcome.retry_after_s):
                    report.abandoned = True
                    report.unsettled = [*rest, *(i for part in pending for i in part)]
                    return report
                resends += 1
                report.retries += 1
                pending.append(rest)
            elif outcome.verdict is Verdict.REJECTED_LOCATED:
                # Nothing recorded: resend the rest as a new batch (new Idempotency-Key).
                pending.append(rest)
            elif len(rest) == 1:
                report.rejected[rest[0]] = outcome.message
            else:
                middle = len(rest) // 2
                pending.extend([rest[middle:], rest[:middle]])
        return report
