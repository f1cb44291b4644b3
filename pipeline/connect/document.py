"""The createSignals request, built with graphql-core: values are escaped by construction.

The pipeline sends one constant document with the signals as GraphQL variables
(JSON), so no value is ever pasted into GraphQL text. ``inline_mutation`` renders
the spec's literal style (for people and the offline check) through graphql-core's
AST printer, which escapes every string.

graphql-core costs about 0.15-0.5 s to import, so the run path does not: the constant
document is kept as the text graphql-core prints for it (``CREATE_SIGNALS``;
``tests/unit/test_graphql_doc.py`` holds the two equal) and graphql-core is imported
only to print the literal style.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from graphql import NameNode, ValueNode, VariableDefinitionNode

OPERATION_NAME: Final = "CreateSignals"


def _name(value: str) -> NameNode:
    from graphql import NameNode

    return NameNode(value=value)


def _mutation(signals_argument: ValueNode, variables: tuple[VariableDefinitionNode, ...]) -> str:
    from graphql import (
        ArgumentNode,
        DocumentNode,
        FieldNode,
        OperationDefinitionNode,
        OperationType,
        SelectionSetNode,
        print_ast,
    )

    create = FieldNode(
        name=_name("createSignals"),
        arguments=(ArgumentNode(name=_name("signals"), value=signals_argument),),
        selection_set=SelectionSetNode(selections=(FieldNode(name=_name("signalIds")),)),
    )
    operation = OperationDefinitionNode(
        operation=OperationType.MUTATION,
        name=_name(OPERATION_NAME) if variables else None,
        variable_definitions=variables,
        selection_set=SelectionSetNode(selections=(create,)),
    )
    return print_ast(DocumentNode(definitions=(operation,)))


def _signals_variable() -> VariableDefinitionNode:
    from graphql import (
        ListTypeNode,
        NamedTypeNode,
        NonNullTypeNode,
        VariableDefinitionNode,
        VariableNode,
    )

    signal_input = NonNullTypeNode(type=NamedTypeNode(name=_name("SignalInput")))
    return VariableDefinitionNode(
        variable=VariableNode(name=_name("signals")),
        type=NonNullTypeNode(type=ListTypeNode(type=signal_input)),
    )


def printed_create_signals() -> str:
    """The variables-form document as graphql-core prints it (what ``CREATE_SIGNALS`` is)."""
    from graphql import NameNode, VariableNode

    return _mutation(VariableNode(name=NameNode(value="signals")), (_signals_variable(),))


#: ``printed_create_signals()``, kept as text so the run path never imports graphql-core
CREATE_SIGNALS: Final = (
    "mutation CreateSignals($signals: [SignalInput!]!) {\n"
    "  createSignals(signals: $signals) {\n"
    "    signalIds\n"
    "  }\n"
    "}"
)


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
    from graphql import (
        BooleanValueNode,
        FloatValueNode,
        IntValueNode,
        ListValueNode,
        NameNode,
        NullValueNode,
        ObjectFieldNode,
        ObjectValueNode,
        StringValueNode,
    )

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
                ObjectFieldNode(name=NameNode(value=key), value=value_node(item))
                for key, item in value.items()
            )
        )
    raise TypeError(f"no GraphQL literal for {type(value).__name__}")


def inline_mutation(signals: Sequence[dict[str, Any]]) -> str:
    """The spec's literal style: ``mutation { createSignals(signals: [...]) {...} }``."""
    return _mutation(value_node(list(signals)), ())
