"""The createSignals request, built with graphql-core: values are escaped by construction.

The pipeline sends one constant document with the signals as GraphQL variables
(JSON), so no value is ever pasted into GraphQL text. ``inline_mutation`` renders
the spec's literal style (for people and the offline check) through graphql-core's
AST printer, which escapes every string.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Final

from graphql import (
    ArgumentNode,
    BooleanValueNode,
    DocumentNode,
    FieldNode,
    FloatValueNode,
    IntValueNode,
    ListTypeNode,
    ListValueNode,
    NamedTypeNode,
    NameNode,
    NonNullTypeNode,
    NullValueNode,
    ObjectFieldNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableDefinitionNode,
    VariableNode,
    print_ast,
)

OPERATION_NAME: Final = "CreateSignals"


def _name(value: str) -> NameNode:
    return NameNode(value=value)


def _selection() -> SelectionSetNode:
    return SelectionSetNode(selections=(FieldNode(name=_name("signalIds")),))


def _mutation(signals_argument: ValueNode, variables: tuple[VariableDefinitionNode, ...]) -> str:
    create = FieldNode(
        name=_name("createSignals"),
        arguments=(ArgumentNode(name=_name("signals"), value=signals_argument),),
        selection_set=_selection(),
    )
    operation = OperationDefinitionNode(
        operation=OperationType.MUTATION,
        name=_name(OPERATION_NAME) if variables else None,
        variable_definitions=variables,
        selection_set=SelectionSetNode(selections=(create,)),
    )
    return print_ast(DocumentNode(definitions=(operation,)))


def _signals_variable() -> VariableDefinitionNode:
    signal_input = NonNullTypeNode(type=NamedTypeNode(name=_name("SignalInput")))
    return VariableDefinitionNode(
        variable=VariableNode(name=_name("signals")),
        type=NonNullTypeNode(type=ListTypeNode(type=signal_input)),
    )


#: ``mutation CreateSignals($signals: [SignalInput!]!) { createSignals(...) { signalIds } }``
CREATE_SIGNALS: Final = _mutation(VariableNode(name=_name("signals")), (_signals_variable(),))


def request_body(signals: Sequence[dict[str, Any]]) -> bytes:
    """The JSON body of one createSignals call (GraphQL over HTTP, variables form)."""
    payload = {
        "query": CREATE_SIGNALS,
        "operationName": OPERATION_NAME,
        "variables": {"signals": list(signals)},
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def value_node(value: Any) -> ValueNode:
    """A Python JSON value as a GraphQL literal."""
    if value is None:
        return NullValueNode()
    if isinstance(value, bool):
        return BooleanValueNode(value=value)
    if isinstance(value, int):
        return IntValueNode(value=str(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("GraphQL has no literal for NaN or infinity")
        return FloatValueNode(value=repr(value))
    if isinstance(value, str):
        return StringValueNode(value=value)
    if isinstance(value, list | tuple):
        return ListValueNode(values=tuple(value_node(v) for v in value))
    if isinstance(value, dict):
        return ObjectValueNode(
            fields=tuple(
                ObjectFieldNode(name=_name(k), value=value_node(v)) for k, v in value.items()
            )
        )
    raise TypeError(f"no GraphQL literal for {type(value).__name__}")


def inline_mutation(signals: Sequence[dict[str, Any]]) -> str:
    """The spec's literal style: ``mutation { createSignals(signals: [...]) {...} }``."""
    return _mutation(value_node(list(signals)), ())
