import json
import random

import httpx
import pytest
from graphql import parse

from pipeline.connect.client import (
    Batch,
    RetryPolicy,
    Verdict,
    batch_body,
    batch_key,
    classify_response,
    encode_signal,
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


@pytest.mark.parametrize("status", [400, 413, 422])
def test_client_errors_without_index_are_unlocated(status):
    result = classify_response(status, httpx.Headers(), b'{"errors":[{"message":"no"}]}', 4)
    assert result.verdict is Verdict.REJECTED_UNLOCATED
    assert result.message == "no"


@pytest.mark.parametrize("status", [401, 403, 404, 408, 409, 429, 500, 502, 503, 504])
def test_transient_and_configuration_statuses_retry(status):
    headers = httpx.Headers({"retry-after": "3"})
    result = classify_response(status, headers, b"", 1)
    assert result.verdict is Verdict.RETRY
    assert result.retry_after_s == 3.0


def test_a_non_graphql_success_page_is_retried_not_rejected():
    assert classify_response(200, httpx.Headers(), b"<html>", 1).verdict is Verdict.RETRY


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
