"""The createSignals request survives hostile strings in every string field.

(a) The variables form: the JSON body parses, its query is the one constant document
with one operation and one field, and the variables carry the exact values.
(b) The inline form: graphql-core parses it back to one operation, one field, and
``value_from_ast_untyped`` gives back exactly the original signal.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

import pytest
from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    parse,
    print_ast,
)
from graphql.utilities import value_from_ast_untyped
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.connect.document import CREATE_SIGNALS, OPERATION_NAME, inline_mutation, request_body
from pipeline.signals import catalog
from pipeline.signals.mapping import MappedSignal, MappingOptions, map_event
from pipeline.signals.validation import ValidEvent, validate_event
from tests.spec_examples import full_event

HOSTILE: Final = (
    'say "hello"',
    "back\\slash \\n \\u0041 \\",
    "line one\nline two\r\nline three",
    "tab\there",
    "unicode: café, naïve, 日本語, Ελληνικά, עברית",
    "emoji 🎨🖌️👩‍👩‍👧 and a flag 🇦🇲",
    "controls \x01\x07\x08\x0b\x0c\x1b\x1f\x7f end",
    '"} } mutation { x',
    '"}]) { signalIds } } mutation Evil { deleteEverything(all: true) { ok } } #',
    '""" block """ $signals @skip(if: true) ... on Query',
    "\u2028line separator\u2029paragraph separator",
    "",
)


def _signal(signal_type: str) -> dict[str, Any]:
    """A signal with every field of the type set, as the pipeline maps it."""
    valid = validate_event(signal_type, full_event(signal_type))
    assert isinstance(valid, ValidEvent), valid
    mapped = map_event(valid, MappingOptions())
    assert isinstance(mapped, MappedSignal), mapped
    return mapped.signal


def _replace_strings(value: Any, text: str) -> tuple[Any, int]:
    """Every string leaf replaced by ``text`` (keys kept), and how many were replaced."""
    if isinstance(value, str):
        return text, 1
    if isinstance(value, list):
        pairs = [_replace_strings(v, text) for v in value]
        return [p[0] for p in pairs], sum(p[1] for p in pairs)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        count = 0
        for k, v in value.items():
            out[k], n = _replace_strings(v, text)
            count += n
        return out, count
    return value, 0


def _only_operation(document: DocumentNode) -> tuple[OperationDefinitionNode, FieldNode]:
    assert len(document.definitions) == 1
    (operation,) = document.definitions
    assert isinstance(operation, OperationDefinitionNode)
    assert operation.operation is OperationType.MUTATION
    assert len(operation.selection_set.selections) == 1
    (field,) = operation.selection_set.selections
    assert isinstance(field, FieldNode)
    assert field.name.value == "createSignals"
    assert field.selection_set is not None
    assert [s.name.value for s in field.selection_set.selections] == ["signalIds"]  # type: ignore[attr-defined]
    return operation, field


def assert_request_body_exact(signals: list[dict[str, Any]]) -> None:
    body = json.loads(request_body(signals))
    assert set(body) == {"query", "operationName", "variables"}
    assert body["query"] == CREATE_SIGNALS
    assert body["operationName"] == OPERATION_NAME
    assert body["variables"] == {"signals": signals}
    operation, field = _only_operation(parse(body["query"]))
    assert operation.name is not None and operation.name.value == OPERATION_NAME
    (argument,) = _arguments(field)
    assert argument.name.value == "signals"
    assert isinstance(argument.value, VariableNode)
    assert argument.value.name.value == "signals"


def _arguments(field: FieldNode) -> tuple[ArgumentNode, ...]:
    return tuple(field.arguments or ())


def _same(a: Any, b: Any) -> bool:
    """Equal values with equal JSON types (1 is not 1.0 here, True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_inline_round_trip(signals: list[dict[str, Any]]) -> None:
    text = inline_mutation(signals)
    operation, field = _only_operation(parse(text))
    assert operation.name is None
    assert operation.variable_definitions == () or not operation.variable_definitions
    (argument,) = _arguments(field)
    assert argument.name.value == "signals"
    back = value_from_ast_untyped(argument.value)
    assert back == signals
    assert _same(back, signals)


def test_constant_document() -> None:
    expected = (
        "mutation CreateSignals($signals: [SignalInput!]!) "
        "{ createSignals(signals: $signals) { signalIds } }"
    )
    assert print_ast(parse(CREATE_SIGNALS)) == print_ast(parse(expected))


@pytest.mark.parametrize("signal_type", catalog.SIGNAL_TYPES)
@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_in_every_string_field(signal_type: str, text: str) -> None:
    signal, replaced = _replace_strings(_signal(signal_type), text)
    # appKey, sessionId, the identity, signalType and the content's own strings at least.
    assert replaced >= 5
    assert signal["appKey"] == text and signal["sessionId"] == text
    assert set(signal["identifiableAttributes"].values()) == {text}
    assert_request_body_exact([signal])
    assert_inline_round_trip([signal])


def test_every_string_field_kind_is_exercised() -> None:
    """The full events carry item strings, string lists and custom attributes."""
    order = _signal("order")["signalContent"]
    assert isinstance(order["orderedItems"][0]["productName"], str)
    assert isinstance(order["orderedItems"][0]["productUrls"][0], str)
    assert isinstance(order["signalCustomAttributes"][0]["value"], str)
    view = _signal("productView")["signalContent"]
    assert isinstance(view["tags"][0], str)


def test_batch_of_many_signals() -> None:
    signals = [
        _replace_strings(_signal(t), HOSTILE[i % len(HOSTILE)])[0]
        for i, t in enumerate(catalog.SIGNAL_TYPES)
    ]
    assert_request_body_exact(signals)
    assert_inline_round_trip(signals)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_refused(bad: float) -> None:
    signal = _signal("order")
    signal["signalContent"]["orderValue"] = bad
    with pytest.raises(ValueError):
        request_body([signal])
    with pytest.raises(ValueError):
        inline_mutation([signal])


_JSON_TEXT: Final = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]),  # surrogates are not UTF-8
    max_size=40,
)
_NUMBERS: Final = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=150, deadline=None)
@given(
    strings=st.lists(_JSON_TEXT, min_size=4, max_size=4),
    number=_NUMBERS,
    flag=st.booleans(),
    urls=st.lists(_JSON_TEXT, max_size=3),
)
def test_arbitrary_text_and_numbers_round_trip(
    strings: list[str], number: float, flag: bool, urls: list[str]
) -> None:
    signal = {
        "appKey": strings[0],
        "identifiableAttributes": {"email": strings[1]},
        "sessionId": strings[2],
        "signalContent": {
            "signalType": "productView",
            "productName": strings[3],
            "unitPrice": number,
            "inStock": flag,
            "productUrls": urls,
            "nothing": None,
        },
    }
    assert_request_body_exact([signal])
    assert_inline_round_trip([signal])
    _, field = _only_operation(parse(inline_mutation([signal])))
    price = value_from_ast_untyped(_arguments(field)[0].value)[0]["signalContent"]["unitPrice"]
    assert price == number and (math.copysign(1, price) == math.copysign(1, number))
