import json
import random
import threading

import httpx
import pytest
from graphql import parse

from pipeline.connect.client import (
    RULES,
    SAME_BATCH_AGAIN,
    Batch,
    ConnectClient,
    RetryPolicy,
    Verdict,
    batch_body,
    batch_key,
    classify_response,
    encode_signal,
    rules_markdown,
    sf_list,
    sf_string,
)
from pipeline.connect.document import CREATE_SIGNALS


def _body(document):
    return json.dumps(document).encode()


def test_all_accepted():
    body = _body({"data": {"createSignals": {"signalIds": ["a", "b"]}}})
    assert classify_response(200, httpx.Headers(), body, 2).verdict is Verdict.ACCEPTED


def test_partial_acceptance_names_the_rejected_index():
    body = _body(
        {
            "data": {"createSignals": {"signalIds": ["a", None, "c"]}},
            "errors": [
                {
                    "message": "signals[1].signalContent.currency: 'USX' is not an ISO 4217 code",
                    "path": ["createSignals", "signals", 1, "signalContent", "currency"],
                }
            ],
        }
    )
    result = classify_response(200, httpx.Headers(), body, 3)
    assert result.verdict is Verdict.PARTIAL
    assert list(result.rejected) == [1]
    assert "USX" in result.rejected[1]


def test_whole_batch_rejection_with_indices_is_located():
    body = _body({"data": None, "errors": [{"message": "bad", "extensions": {"index": 2}}]})
    result = classify_response(200, httpx.Headers(), body, 3)
    assert result.verdict is Verdict.REJECTED_LOCATED
    assert result.rejected == {2: "bad"}


@pytest.mark.parametrize("status", [400, 422])
def test_client_errors_without_index_are_unlocated(status):
    result = classify_response(status, httpx.Headers(), b'{"errors":[{"message":"no"}]}', 4)
    assert result.verdict is Verdict.REJECTED_UNLOCATED
    assert result.message == "no"


def test_a_413_splits_whatever_its_body():
    result = classify_response(413, httpx.Headers(), b"<html>too large</html>", 4)
    assert result.verdict is Verdict.REJECTED_UNLOCATED


@pytest.mark.parametrize("status", [401, 403, 404, 407, 408, 409, 429, 500, 502, 503, 504])
def test_transient_and_configuration_statuses_retry(status):
    headers = httpx.Headers({"retry-after": "3"})
    result = classify_response(status, headers, b"", 1)
    assert result.verdict is Verdict.RETRY
    assert result.retry_after_s == 3.0


def test_a_non_graphql_success_page_is_retried_not_rejected():
    assert classify_response(200, httpx.Headers(), b"<html>", 1).verdict in SAME_BATCH_AGAIN


def test_body_is_the_constant_document_with_signals_as_variables():
    signals = [{"appKey": 'a"} } mutation {', "n": 1}, {"x": "é\n"}]
    body = json.loads(batch_body([encode_signal(s) for s in signals]))
    assert body["query"] == CREATE_SIGNALS
    assert len(parse(body["query"]).definitions) == 1
    assert body["variables"]["signals"] == signals


def test_batch_key_depends_on_exactly_the_signals():
    assert batch_key(["a", "b"]) == batch_key(["a", "b"])
    assert batch_key(["a", "b"]) != batch_key(["a"])
    assert batch_key(["a", "b"]) != batch_key(["b", "a"])


def test_subset_keeps_keys_fragments_and_refs_aligned():
    batch = Batch(["k0", "k1", "k2"], [b"0", b"1", b"2"], ["r0", "r1", "r2"])
    sub = batch.subset([2, 0])
    assert (sub.keys, sub.fragments, sub.refs) == (["k2", "k0"], [b"2", b"0"], ["r2", "r0"])


def test_sf_string_escapes():
    assert sf_string('a"b\\c') == '"a\\"b\\\\c"'


def test_backoff_grows_is_capped_and_honours_retry_after():
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=2.0)
    rng = random.Random(1)
    assert all(policy.delay(0, None, rng) <= 0.1 for _ in range(100))
    assert all(policy.delay(20, None, rng) <= 2.0 for _ in range(100))
    assert policy.delay(0, 5.0, rng) >= 5.0


@pytest.mark.parametrize(
    "keys",
    [[], ["a"], ["e-1", "e-2", "e-3"], ['a"b', "c"], ["x", "back\\slash"], ['", "', "z"]],
)
def test_sf_list_is_the_sf_strings_joined(keys):
    assert sf_list(keys) == ", ".join(sf_string(k) for k in keys)


# --- every response shape, by the rule table ------------------------------------------

OK_3 = {"data": {"createSignals": {"signalIds": ["a", "b", "c"]}}}


def _coded(code, **extra):
    error = {"message": f"{code} happened", "extensions": {"code": code}}
    error.update(extra)
    return _body({"data": None, "errors": [error]})


SHAPES = [
    # (name, status, body, verdict, rejected indices, accepted indices)
    ("accepted", 200, _body(OK_3), Verdict.ACCEPTED, set(), set()),
    ("empty 200", 200, b"", Verdict.UNKNOWN, set(), set()),
    ("data null", 200, b'{"data":null}', Verdict.UNKNOWN, set(), set()),
    ("empty object", 200, b"{}", Verdict.UNKNOWN, set(), set()),
    ("createSignals null", 200, b'{"data":{"createSignals":null}}', Verdict.UNKNOWN, set(), set()),
    ("html 200", 200, b"<html><body>Welcome</body></html>", Verdict.UNKNOWN, set(), set()),
    ("proxy 407", 407, b"<html>Proxy Authentication Required</html>", Verdict.RETRY, set(), set()),
    ("errors a number", 200, b'{"data":null,"errors":5}', Verdict.UNKNOWN, set(), set()),
    ("errors an object", 200, b'{"errors":{"message":"x"}}', Verdict.UNKNOWN, set(), set()),
    ("errors [null]", 200, b'{"data":null,"errors":[null]}', Verdict.UNKNOWN, set(), set()),
    (
        "extensions a string",
        200,
        b'{"data":null,"errors":[{"message":"m","extensions":"x"}]}',
        Verdict.UNKNOWN,
        set(),
        set(),
    ),
    ("a JSON array", 200, b'[{"data":null}]', Verdict.UNKNOWN, set(), set()),
    ("a JSON string", 200, b'"ok"', Verdict.UNKNOWN, set(), set()),
    ("data a list", 200, b'{"data":[1]}', Verdict.UNKNOWN, set(), set()),
    ("result a string", 200, b'{"data":{"createSignals":"x"}}', Verdict.UNKNOWN, set(), set()),
    (
        "invalid UTF-8",
        200,
        b'{"data":{"createSignals":{"signalIds":["\\xff\xfe"]}}}',
        Verdict.UNKNOWN,
        set(),
        set(),
    ),
    (
        "truncated JSON",
        200,
        b'{"data":{"createSignals":{"signalIds":["a",',
        Verdict.UNKNOWN,
        set(),
        set(),
    ),
    ("THROTTLED", 200, _coded("THROTTLED"), Verdict.RETRY, set(), set()),
    ("RATE_LIMITED", 200, _coded("RATE_LIMITED"), Verdict.RETRY, set(), set()),
    ("INTERNAL_SERVER_ERROR", 200, _coded("INTERNAL_SERVER_ERROR"), Verdict.RETRY, set(), set()),
    ("SERVICE_UNAVAILABLE", 200, _coded("SERVICE_UNAVAILABLE"), Verdict.RETRY, set(), set()),
    ("UNAUTHENTICATED", 200, _coded("UNAUTHENTICATED"), Verdict.RETRY, set(), set()),
    ("FORBIDDEN", 200, _coded("FORBIDDEN"), Verdict.RETRY, set(), set()),
    ("an unknown code", 200, _coded("SOMETHING_NEW"), Verdict.RETRY, set(), set()),
    (
        "no code in a 200",
        200,
        b'{"data":null,"errors":[{"message":"m"}]}',
        Verdict.RETRY,
        set(),
        set(),
    ),
    ("THROTTLED in a 400", 400, _coded("THROTTLED"), Verdict.RETRY, set(), set()),
    ("BAD_USER_INPUT", 200, _coded("BAD_USER_INPUT"), Verdict.REJECTED_UNLOCATED, set(), set()),
    (
        "GRAPHQL_VALIDATION_FAILED",
        400,
        _coded("GRAPHQL_VALIDATION_FAILED"),
        Verdict.REJECTED_UNLOCATED,
        set(),
        set(),
    ),
    (
        "an index into the signals",
        200,
        _coded("THROTTLED", path=["createSignals", "signals", 1]),
        Verdict.REJECTED_LOCATED,
        {1},
        set(),
    ),
    (
        "an index outside the signals",
        200,
        _coded("THROTTLED", extensions={"code": "X", "index": 7}),
        Verdict.RETRY,
        set(),
        set(),
    ),
    (
        "accepted some + THROTTLED",
        200,
        _body(
            {
                "data": {"createSignals": {"signalIds": ["a", None, "c"]}},
                "errors": [{"message": "later", "extensions": {"code": "THROTTLED"}}],
            }
        ),
        Verdict.ACCEPTED_SOME,
        set(),
        {0, 2},
    ),
    (
        "accepted some, one bad, + INTERNAL_SERVER_ERROR",
        200,
        _body(
            {
                "data": {"createSignals": {"signalIds": ["a", None, None]}},
                "errors": [
                    {"message": "bad", "extensions": {"code": "BAD_USER_INPUT", "index": 1}},
                    {"message": "oops", "extensions": {"code": "INTERNAL_SERVER_ERROR"}},
                ],
            }
        ),
        Verdict.ACCEPTED_SOME,
        {1},
        {0},
    ),
    (
        "transient error, signalIds all null",
        200,
        _body(
            {
                "data": {"createSignals": {"signalIds": [None, None, None]}},
                "errors": [{"message": "later", "extensions": {"code": "THROTTLED"}}],
            }
        ),
        Verdict.RETRY,
        set(),
        set(),
    ),
    ("HTTP 301", 301, b"", Verdict.UNKNOWN, set(), set()),
    ("HTTP 405 page", 405, b"<html>Method Not Allowed</html>", Verdict.UNKNOWN, set(), set()),
]


@pytest.mark.parametrize(
    ("status", "body", "verdict", "rejected", "accepted"),
    [shape[1:] for shape in SHAPES],
    ids=[shape[0] for shape in SHAPES],
)
def test_every_response_shape_is_classified_by_the_rule_table(
    status, body, verdict, rejected, accepted
):
    result = classify_response(status, httpx.Headers(), body, 3)
    assert result.verdict is verdict
    assert set(result.rejected) == rejected
    assert set(result.accepted) == accepted
    assert result.rule is not None and RULES[result.rule][0] is verdict


def test_every_rule_is_reached_by_a_shape():
    reached = {classify_response(s[1], httpx.Headers(), s[2], 3).rule for s in SHAPES}
    reached.add(classify_response(413, httpx.Headers(), b"", 3).rule)
    reached.add(
        classify_response(
            200,
            httpx.Headers(),
            _body({**OK_3, "errors": [{"message": "x", "path": ["signals", 0]}]}),
            3,
        ).rule
    )
    assert reached == set(RULES)


def test_transient_codes_never_reject_whatever_else_the_response_says():
    codes = ["THROTTLED", "RATE_LIMITED", "INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE",
             "UNAUTHENTICATED", "FORBIDDEN", "X"]  # fmt: skip
    for code in codes:
        for status in (200, 400, 422):
            body = _body({"errors": [{"message": "m", "extensions": {"code": code}}]})
            result = classify_response(status, httpx.Headers(), body, 5)
            assert result.verdict is Verdict.RETRY and not result.rejected, (code, status)


def test_rules_render_as_a_markdown_table():
    table = rules_markdown().splitlines()
    assert table[:2] == ["| response | outcome |", "|---|---|"]
    assert len(table) == 2 + len(RULES)


# --- the delivery loop, with a scripted transport (no network) ------------------------


def _response(status, document=None, raw=None):
    content = raw if raw is not None else (b"" if document is None else _body(document))
    return httpx.Response(status, content=content, request=httpx.Request("POST", "http://x"))


class ScriptedTransport:
    """Answers each call from a script (callables raise or answer); then accepts."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls = []

    def __call__(self, url, body, headers):
        signals = json.loads(body)["variables"]["signals"]
        self.calls.append((headers["Idempotency-Key"], [s["n"] for s in signals]))
        if self.script:
            step = self.script.pop(0)
            return step(len(signals))
        ids = [f"id-{i}" for i in range(len(signals))]
        return _response(200, {"data": {"createSignals": {"signalIds": ids}}})


def _client(transport, **extra):
    options = {
        "timeout_s": 1,
        "max_connections": 1,
        "retry": RetryPolicy(0.001, 0.002),
        "stop": threading.Event(),
        "transport": transport,
        "seed": 1,
        **extra,
    }
    return ConnectClient("http://x/graphql", "X-API-Key", "k", **options)


def _batch(n):
    return Batch(
        [f"k{i}" for i in range(n)], [encode_signal({"n": i}) for i in range(n)], list(range(n))
    )


def _raise(error):
    def step(n):
        raise error

    return step


def test_an_exception_raised_by_the_transport_is_retried_and_the_batch_finishes():
    transport = ScriptedTransport(_raise(RuntimeError("boom")), _raise(KeyError("x")))
    outcomes = []
    client = _client(transport, on_call=lambda outcome, s, n: outcomes.append(outcome))
    report = client.deliver(_batch(4))
    assert not report.abandoned and report.rejected == {}
    assert report.calls == 3 and report.retries == 2 and report.errors == 2
    assert outcomes == ["error", "error", "ok"]
    assert len({key for key, _ in transport.calls}) == 1  # the same batch, the same key


def test_an_observer_that_raises_does_not_kill_the_delivery():
    def on_call(outcome, seconds, n):
        raise ValueError("metrics broke")

    report = _client(ScriptedTransport(), on_call=on_call).deliver(_batch(2))
    assert not report.abandoned and report.rejected == {} and report.calls == 1


def test_unreadable_and_transient_answers_resend_the_same_batch_with_the_same_key():
    transport = ScriptedTransport(
        lambda n: _response(200, raw=b""),
        lambda n: _response(200, raw=b'{"data":null,"errors":5}'),
        lambda n: _response(200, raw=_coded("THROTTLED")),
        lambda n: _response(407, raw=b"<html>proxy</html>"),
    )
    failing = []
    report = _client(transport, on_failing=failing.append).deliver(_batch(5))
    assert report.rejected == {} and report.calls == 5
    assert {key for key, _ in transport.calls} == {transport.calls[0][0]}
    assert all(sent == [0, 1, 2, 3, 4] for _, sent in transport.calls)
    assert failing == [True, False]


def test_signals_accepted_beside_a_transient_error_are_not_sent_again():
    some = {
        "data": {"createSignals": {"signalIds": ["a", None, "c", None]}},
        "errors": [{"message": "later", "extensions": {"code": "SERVICE_UNAVAILABLE"}}],
    }
    transport = ScriptedTransport(lambda n: _response(200, some))
    report = _client(transport).deliver(_batch(4))
    assert report.rejected == {} and not report.abandoned
    assert [sent for _, sent in transport.calls] == [[0, 1, 2, 3], [1, 3]]
    assert transport.calls[0][0] != transport.calls[1][0]  # another batch, another key


def test_a_batch_that_keeps_timing_out_is_split_and_never_rejected():
    def slow(n):
        if n > 2:
            raise httpx.ReadTimeout("slow")
        return _response(200, {"data": {"createSignals": {"signalIds": ["x"] * n}}})

    transport = ScriptedTransport(*[slow] * 50)
    report = _client(transport, split_after_timeouts=3).deliver(_batch(8))
    assert report.rejected == {} and not report.abandoned
    sizes = [len(sent) for _, sent in transport.calls]
    assert sizes[:3] == [8, 8, 8] and sizes[3:6] == [4, 4, 4]
    assert sorted(n for _, sent in transport.calls if len(sent) <= 2 for n in sent) == list(
        range(8)
    )
    assert report.slow_splits == 3


def test_504s_count_as_timeouts_but_a_lone_signal_is_never_split_or_rejected():
    transport = ScriptedTransport(*[lambda n: _response(504)] * 6)
    report = _client(transport, split_after_timeouts=2).deliver(_batch(1))
    assert report.rejected == {} and report.calls == 7 and report.slow_splits == 0


def test_other_failures_between_timeouts_restart_the_count():
    steps = [_raise(httpx.ReadTimeout("t")), lambda n: _response(503)] * 3
    transport = ScriptedTransport(*steps)
    report = _client(transport, split_after_timeouts=2).deliver(_batch(4))
    assert report.slow_splits == 0 and report.calls == 7


def test_shutdown_during_retries_abandons_the_batch():
    stop = threading.Event()
    stop.set()
    transport = ScriptedTransport(lambda n: _response(200, raw=b"<html>"))
    report = _client(transport, stop=stop).deliver(_batch(3))
    assert report.abandoned and report.rejected == {}


def test_a_permanent_error_without_index_isolates_the_bad_signal():
    def answer(n):
        return _response(200, raw=_coded("BAD_USER_INPUT"))

    def by_content(url, body, headers):
        signals = json.loads(body)["variables"]["signals"]
        transport.calls.append((headers["Idempotency-Key"], [s["n"] for s in signals]))
        if any(s["n"] == 2 for s in signals):
            return answer(len(signals))
        ids = ["x"] * len(signals)
        return _response(200, {"data": {"createSignals": {"signalIds": ids}}})

    transport = ScriptedTransport()
    report = _client(by_content).deliver(_batch(4))
    assert list(report.rejected) == [2]
    assert "BAD_USER_INPUT" in report.rejected[2]


# --- the real API's limits, as settings -------------------------------------------------


def test_settings_default_to_connects_x_api_key_and_refuse_more_than_500_per_call():
    from pipeline.config import ConfigError, load_settings

    settings = load_settings(topics=["t"], batch_max_signals=500)
    assert (settings.connect_auth_header, settings.connect_auth_scheme) == ("X-API-Key", "")
    assert settings.split_after_timeouts == 3
    with pytest.raises(ConfigError, match="PIPELINE_BATCH_MAX_SIGNALS: at most 500"):
        load_settings(topics=["t"], batch_max_signals=501)


def test_a_bug_in_the_bookkeeping_retries_the_whole_batch_instead_of_raising(monkeypatch):
    client = _client(ScriptedTransport())
    real = client._deliver
    failures = iter([RuntimeError("bug")])

    def flaky(batch, report):
        for error in failures:
            raise error
        return real(batch, report)

    monkeypatch.setattr(client, "_deliver", flaky)
    report = client.deliver(_batch(3))
    assert not report.abandoned and report.rejected == {} and report.calls == 1
