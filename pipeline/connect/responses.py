"""What one createSignals response means: the rule table and ``classify_response``.

Pure: one HTTP exchange (status, headers, body) in, a verdict per signal out, by the
table ``RULES`` (one row per kind of response; the README's table is generated from it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import orjson


class Verdict(StrEnum):
    """What to do with a batch after one call (also the ``outcome`` metric label)."""

    ACCEPTED = "ok"  # every signal accepted
    PARTIAL = "partial"  # the signals named by index rejected, the others accepted
    REJECTED_LOCATED = "rejected"  # nothing accepted; reject the named, resend the rest
    REJECTED_UNLOCATED = "rejected_unlocated"  # permanent, no index: split to isolate
    ACCEPTED_SOME = "accepted_some"  # some accepted (signalIds) + a transient error: resend rest
    RETRY = "retryable"  # transient: the same batch again, same Idempotency-Key
    UNKNOWN = "unknown"  # unreadable answer: outcome unknown, same batch, same key


#: Verdicts after which the very same request is sent again (same Idempotency-Key).
SAME_BATCH_AGAIN: Final = frozenset({Verdict.RETRY, Verdict.UNKNOWN})


class Rule(StrEnum):
    """The kinds of response ``classify_response`` tells apart (rows of ``RULES``)."""

    TRANSIENT_STATUS = "transient_status"
    TOO_LARGE = "too_large"
    OTHER_STATUS = "other_status"
    UNREADABLE = "unreadable"
    NO_RESULT = "no_result"
    ACCEPTED = "accepted"
    LOCATED_WITH_RESULT = "located_with_result"
    LOCATED_WITHOUT_RESULT = "located_without_result"
    PERMANENT_UNLOCATED = "permanent_unlocated"
    TRANSIENT_SOME_ACCEPTED = "transient_some_accepted"
    TRANSIENT_ERROR = "transient_error"


#: The rule table: response kind -> (verdict, what it covers). README renders it.
RULES: Final[Mapping[Rule, tuple[Verdict, str]]] = {
    Rule.TRANSIENT_STATUS: (
        Verdict.RETRY,
        "HTTP 401, 403, 404, 407, 408, 409, 425, 429 or any 5xx (Retry-After honoured)",
    ),
    Rule.TOO_LARGE: (Verdict.REJECTED_UNLOCATED, "HTTP 413: split; a lone signal is too large"),
    Rule.OTHER_STATUS: (Verdict.UNKNOWN, "1xx/3xx, or a 4xx whose body is not GraphQL JSON"),
    Rule.UNREADABLE: (
        Verdict.UNKNOWN,
        "body not UTF-8 JSON, truncated, empty, not an object; `errors` not a list of "
        "objects; `extensions`, `data` or `createSignals` of the wrong type",
    ),
    Rule.NO_RESULT: (Verdict.UNKNOWN, "no errors and no createSignals result (`{}`, data null)"),
    Rule.ACCEPTED: (Verdict.ACCEPTED, "a createSignals result and no errors"),
    Rule.LOCATED_WITH_RESULT: (
        Verdict.PARTIAL,
        "a result; every error names a signal (extensions.index or path): those rejected",
    ),
    Rule.LOCATED_WITHOUT_RESULT: (
        Verdict.REJECTED_LOCATED,
        "data null; every error names a signal: those rejected, the rest sent again",
    ),
    Rule.PERMANENT_UNLOCATED: (
        Verdict.REJECTED_UNLOCATED,
        "an error without index coded BAD_USER_INPUT, GRAPHQL_VALIDATION_FAILED or "
        "GRAPHQL_PARSE_FAILED (or uncoded in a 400/422), none transient",
    ),
    Rule.TRANSIENT_SOME_ACCEPTED: (
        Verdict.ACCEPTED_SOME,
        "a transient error without index, signalIds name accepted signals: "
        "those finished, the rest sent again",
    ),
    Rule.TRANSIENT_ERROR: (
        Verdict.RETRY,
        "an error without index coded THROTTLED, RATE_LIMITED, INTERNAL_SERVER_ERROR, "
        "SERVICE_UNAVAILABLE, UNAUTHENTICATED, FORBIDDEN, another code or none",
    ),
}

#: Statuses that mean "try again later", never "this signal is bad". 401/403/404 are
#: configuration problems (key, URL), 407 a proxy's: dead-lettering every event because
#: of a wrong key would be the worst outcome, so they pause and retry, and readiness
#: reports the API as failing.
RETRYABLE_STATUSES: Final = frozenset({401, 403, 404, 407, 408, 409, 425, 429, 500, 502, 503, 504})
#: Statuses whose readable GraphQL errors without a code mean "this request is bad".
CLIENT_ERROR_STATUSES: Final = frozenset({400, 422})
#: ``extensions.code`` values that condemn the request even without an index; every
#: other code (THROTTLED, RATE_LIMITED, INTERNAL_SERVER_ERROR, SERVICE_UNAVAILABLE,
#: UNAUTHENTICATED, FORBIDDEN, unknown ones) is transient.
PERMANENT_CODES: Final = frozenset(
    {"BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED", "GRAPHQL_PARSE_FAILED"}
)
#: Statuses counted as "the call took too long" (with client timeouts) for splitting.
SLOW_STATUSES: Final = frozenset({504})


@dataclass(frozen=True, slots=True)
class Classified:
    verdict: Verdict
    #: index in the request -> the server's message
    rejected: dict[int, str] = field(default_factory=dict)
    message: str = ""
    retry_after_s: float | None = None
    #: indices the server names as accepted (signalIds) when not all were
    accepted: frozenset[int] = frozenset()
    rule: Rule | None = None
    #: a timeout or a 504: counts towards splitting a batch that keeps taking too long
    slow: bool = False
    #: the attempt raised inside the client (a bug or a library's): retried all the same
    raised: bool = False


class _Unreadable(Exception):
    """The response does not have the shape of a GraphQL response."""


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def _error_index(error: dict[str, Any], extensions: dict[str, Any], size: int) -> int | None:
    """The signal an error names, if it names one inside the request."""
    index = extensions.get("index")
    if not (isinstance(index, int) and not isinstance(index, bool)):
        index = None
        path = error.get("path")
        if isinstance(path, list):
            for i, part in enumerate(path[:-1]):
                following = path[i + 1]
                if part == "signals" and type(following) is int:
                    index = following
                    break
    return index if index is not None and 0 <= index < size else None


def _document(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)  # also refuses invalid UTF-8
    except orjson.JSONDecodeError:
        raise _Unreadable("not JSON") from None
    if not isinstance(document, dict):
        raise _Unreadable(f"a JSON {type(document).__name__}, not an object")
    return document


def _result(document: dict[str, Any]) -> dict[str, Any] | None:
    data = document.get("data")
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _Unreadable("data is not an object")
    result = data.get("createSignals")
    if result is not None and not isinstance(result, dict):
        raise _Unreadable("createSignals is not an object")
    return result


def _errors(document: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(error, its extensions) pairs, or _Unreadable when their shape is wrong."""
    errors = document.get("errors")
    if errors is None:
        return []
    if not isinstance(errors, list):
        raise _Unreadable("errors is not a list")
    pairs = []
    for error in errors:
        if not isinstance(error, dict):
            raise _Unreadable("an error is not an object")
        extensions = error.get("extensions")
        if extensions is None:
            extensions = {}
        if not isinstance(extensions, dict):
            raise _Unreadable("an error's extensions is not an object")
        pairs.append((error, extensions))
    return pairs


def _accepted(result: dict[str, Any] | None, size: int) -> frozenset[int]:
    ids = result.get("signalIds") if result is not None else None
    if not isinstance(ids, list) or len(ids) != size:
        return frozenset()
    return frozenset(i for i, signal_id in enumerate(ids) if signal_id is not None)


def _message(error: dict[str, Any]) -> str:
    message = error.get("message")
    return message if isinstance(message, str) else "rejected"


def _by_rule(rule: Rule, **details: Any) -> Classified:
    return Classified(RULES[rule][0], rule=rule, **details)


def classify_response(
    status: int, headers: Mapping[str, str], body: bytes, size: int
) -> Classified:
    """What one createSignals response (to ``size`` signals) means for each signal.

    ``headers`` is case-insensitive (httpx.Headers) or has lower-case names.
    """
    if status in RETRYABLE_STATUSES or status >= 500:
        return _by_rule(
            Rule.TRANSIENT_STATUS,
            message=f"HTTP {status}",
            retry_after_s=_retry_after(headers),
            slow=status in SLOW_STATUSES,
        )
    if status == 413:
        return _by_rule(Rule.TOO_LARGE, message="HTTP 413: request too large")
    try:
        document = _document(body)
        result = _result(document)
        errors = _errors(document)
    except _Unreadable as why:
        rule = Rule.UNREADABLE if 200 <= status < 300 else Rule.OTHER_STATUS
        return _by_rule(rule, message=f"HTTP {status}: outcome unknown: {why}")
    if not 200 <= status < 300 and status not in CLIENT_ERROR_STATUSES and not errors:
        return _by_rule(Rule.OTHER_STATUS, message=f"HTTP {status}: outcome unknown")
    if not errors:
        if result is None:
            return _by_rule(Rule.NO_RESULT, message=f"HTTP {status}: no createSignals result")
        return _by_rule(Rule.ACCEPTED)
    located: dict[int, str] = {}
    permanent: list[str] = []
    transient: list[str] = []
    for error, extensions in errors:
        index = _error_index(error, extensions, size)
        if index is not None:
            located.setdefault(index, _message(error))
            continue
        code = extensions.get("code")
        described = f"{code}: {_message(error)}" if isinstance(code, str) else _message(error)
        if code in PERMANENT_CODES or (code is None and status in CLIENT_ERROR_STATUSES):
            permanent.append(described)
        else:
            transient.append(described)
    accepted = _accepted(result, size) - located.keys()
    if transient:
        message = "; ".join(transient)[:2000]
        if accepted:
            return _by_rule(
                Rule.TRANSIENT_SOME_ACCEPTED, rejected=located, accepted=accepted, message=message
            )
        return _by_rule(Rule.TRANSIENT_ERROR, message=message, retry_after_s=_retry_after(headers))
    if permanent:
        return _by_rule(
            Rule.PERMANENT_UNLOCATED,
            rejected=located,
            accepted=accepted,
            message="; ".join(permanent)[:2000],
        )
    if result is not None:
        return _by_rule(Rule.LOCATED_WITH_RESULT, rejected=located)
    return _by_rule(Rule.LOCATED_WITHOUT_RESULT, rejected=located)


def rules_markdown() -> str:
    """``RULES`` as a markdown table (the README's)."""
    rows = [f"| {text} | `{verdict}` |" for verdict, text in RULES.values()]
    return "\n".join(["| response | outcome |", "|---|---|", *rows])
