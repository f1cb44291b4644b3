"""Hostile registries (issue 12): any answer for a schema id, any bytes behind it.

Whatever the registry answers, decode returns a ``Decoded`` or a ``DecodeFailure``, or
raises ``SchemaRegistryUnavailable`` (the caller holds the record and retries) — and
only when the answer was not definitive: a registry's own "not found" code, or a
schema text of any shape, always gives a value. Two levels: a stub client returning
random schema objects and raising random errors (fast, rich schema shapes), and the
real SchemaRegistryClient against a real HTTP server sending random statuses and bodies.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from typing import Any, Final

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.codec.avro import (
    NOT_FOUND_CODES,
    Decoded,
    DecodeFailure,
    EventDecoder,
    SchemaRegistryUnavailable,
    SchemaStore,
)
from pipeline.codec.registry import decoder_registry_client
from pipeline.config import DEFAULT_AVRO_DIR
from tests.faults.fake_registry import FakeRegistry, fake_registry
from tests.fuzz.hostile import avro_schema, editions, valid_encodings

EXAMPLES: Final = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("FUZZ_RANDOM") is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
STORE: Final = SchemaStore.from_directory(DEFAULT_AVRO_DIR)
SCHEMA_ID: Final = 42
_KEYS: Final = [
    *("type", "name", "namespace", "fields", "items", "values", "symbols", "size"),
    *("default", "aliases", "logicalType", "precision", "scale", "doc"),
]
_TYPES: Final = [
    *("record", "error", "enum", "array", "map", "fixed", "union", "null", "boolean"),
    *("int", "long", "float", "double", "bytes", "string", "AddToCartEvent", "Other"),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)
avro_like = st.recursive(
    st.sampled_from(_TYPES),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.fixed_dictionaries(
            {"type": st.sampled_from(_TYPES)},
            optional={
                "name": st.sampled_from(["connect.signals.AddToCartEvent", "X", "", "a.b.c"]),
                "fields": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["eventId", "sessionId", "f", ""]), "type": inner},
                        optional={"default": json_values, "aliases": json_values},
                    ),
                    max_size=4,
                ),
                "items": inner,
                "values": inner,
                "symbols": st.lists(st.text(max_size=3), max_size=3),
                "size": st.integers(-2, 2**40),
                "logicalType": st.sampled_from(["timestamp-millis", "decimal", "uuid", "x"]),
            },
        )
    ),
    max_leaves=12,
)


@st.composite
def mutated_schema(draw: st.DrawFn) -> Any:
    """One of our schemas with a field's type, name or default replaced."""
    schema = copy.deepcopy(avro_schema(*draw(st.sampled_from(editions()))))
    fields = schema["fields"]
    for _ in range(draw(st.integers(1, 3))):
        field = fields[draw(st.integers(0, len(fields) - 1))]
        key = draw(st.sampled_from(["type", "name", "default", "aliases"]))
        field[key] = draw(avro_like | json_values)
    return schema


schema_texts = st.one_of(
    st.text(max_size=40),
    json_values.map(json.dumps),
    avro_like.map(json.dumps),
    mutated_schema().map(json.dumps),
    st.sampled_from(editions()).map(lambda key: json.dumps(avro_schema(*key))),
)


class _Answer:
    def __init__(self, schema_type: Any, schema_str: Any) -> None:
        self.schema_type = schema_type
        self.schema_str = schema_str


errors = st.one_of(
    st.builds(
        SchemaRegistryError,
        st.sampled_from([404, 500, 503, 401, 200, 0]),
        st.sampled_from([*NOT_FOUND_CODES, -1, 40402, 50001, 0]),
        st.text(max_size=20),
    ),
    st.builds(ConnectionError, st.text(max_size=10)),
    st.builds(TimeoutError),
    st.builds(ValueError, st.text(max_size=10)),
    st.builds(KeyError, st.text(max_size=10)),
    st.builds(RecursionError),
)
answers = st.one_of(
    st.builds(
        _Answer,
        st.sampled_from([None, "AVRO", "avro", "PROTOBUF", "JSON", "", 5, "x" * 100]),
        schema_texts,
    ),
    st.builds(_Answer, st.none(), st.none() | st.integers() | st.binary(max_size=4)),
    errors,
)


class _RandomRegistry:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def get_schema(self, schema_id: int) -> Any:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def _definitive(answer: Any) -> bool:
    """Whether decode must return a value (not hold) for this answer."""
    if isinstance(answer, SchemaRegistryError):
        return answer.http_status_code == 404 and answer.error_code in NOT_FOUND_CODES
    return isinstance(answer, _Answer) and isinstance(answer.schema_str, str)


bodies = st.one_of(
    st.sampled_from([v[5:] for v in valid_encodings() if v[0] == 0]),
    st.binary(max_size=200),
)


@FUZZ
@given(answer=answers, body=bodies)
def test_any_registry_answer_gives_a_value_or_holds(answer: Any, body: bytes) -> None:
    decoder = EventDecoder(STORE, _RandomRegistry(answer))
    value = b"\x00" + SCHEMA_ID.to_bytes(4, "big") + body
    try:
        outcome = decoder.decode(value)
    except SchemaRegistryUnavailable as held:
        assert not _definitive(answer), answer
        assert held.schema_id == SCHEMA_ID
        return
    assert _definitive(answer), answer
    assert isinstance(outcome, Decoded | DecodeFailure)
    if isinstance(outcome, DecodeFailure):
        assert outcome.reason in ("undecodable", "unknown_schema")
        assert 0 < len(outcome.message) <= 400, outcome.message


# --- the real client against a real server sending random answers ----------------------


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeRegistry, Any]]:
    """The server and one client for all examples (a client per example costs 80 ms)."""
    with fake_registry() as (state, url):
        yield state, decoder_registry_client(url)


http_answers = st.tuples(
    st.sampled_from([200, 404, 500, 502, 401, 403, 301, 204, 409]),
    st.sampled_from(["application/json", "text/html", "application/vnd.schemaregistry.v1+json"]),
    st.one_of(
        st.binary(max_size=60),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda code, msg: json.dumps({"error_code": code, "message": msg}).encode(),
            st.sampled_from([*NOT_FOUND_CODES, 40402, 50001, -1]) | st.integers(),
            st.text(max_size=10),
        ),
        st.builds(
            lambda text, kind: json.dumps({"schema": text, "schemaType": kind}).encode(),
            schema_texts,
            st.sampled_from(["AVRO", "PROTOBUF", "JSON", None]),
        ),
    ),
)


@FUZZ
@given(answer=http_answers, body=bodies)
def test_any_http_answer_gives_a_value_or_holds(
    server: tuple[FakeRegistry, Any], answer: tuple[int, str, bytes], body: bytes
) -> None:
    state, client = server
    state.answers[SCHEMA_ID] = answer
    client.clear_caches()  # the client keeps what it read: each example asks again
    decoder = EventDecoder(STORE, client)
    try:
        outcome = decoder.decode(b"\x00" + SCHEMA_ID.to_bytes(4, "big") + body)
    except SchemaRegistryUnavailable as held:
        assert held.schema_id == SCHEMA_ID
        status, _, raw = answer
        if status == 404:  # held on a 404: it must not carry a registry's not-found code
            try:
                code = json.loads(raw).get("error_code")
            except (ValueError, AttributeError):
                code = None
            assert code not in NOT_FOUND_CODES, raw
        return
    assert isinstance(outcome, Decoded | DecodeFailure)
    if answer[0] != 200:  # anything but a 200 gives a value only as "not found"
        assert outcome == DecodeFailure("unknown_schema", f"schema id {SCHEMA_ID} not found")
