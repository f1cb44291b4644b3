"""The SDL's input types compiled into plain checkers for the signals argument.

graphql-core's own variable coercion stops at the first problem and names no batch
index; these checkers report every problem of every signal with its path, so an
error can say ``signals[3].signalContent.itemQuantity: must be Int``; the same pass
applies the value rules it is given (enumerations, currency, ...). They are
compiled once from ``schema.graphql`` into closures (a dict lookup and a ``type()``
test per field), which keeps the check cheap at tens of thousands of signals/s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from graphql import (
    EnumValueNode,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    ListValueNode,
    ObjectValueNode,
    ValueNode,
    VariableNode,
)
from graphql.utilities import value_from_ast_untyped

Problem = tuple[str, str]  # (field path, rule)
Checker = Callable[[Any, str, list[Problem]], None]
ValueRule = Callable[[str], str | None]  # a string value -> the broken rule, or None
#: Extra rules on string fields, by input type name, then field name.
ValueRules = Mapping[str, Mapping[str, ValueRule]]
NO_RULES: Final[ValueRules] = {}
INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1


class EnumLiteral(str):
    """An unquoted enum literal in an inline mutation: no String field accepts one."""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _scalar(name: str) -> Checker:
    def check_string(value: Any, path: str, out: list[Problem]) -> None:
        if type(value) is not str:
            out.append((path, "must be String"))

    def check_int(value: Any, path: str, out: list[Problem]) -> None:
        if type(value) is not int or not INT_MIN <= value <= INT_MAX:
            out.append((path, "must be Int"))

    def check_float(value: Any, path: str, out: list[Problem]) -> None:
        kind = type(value)
        if not (kind is int or (kind is float and math.isfinite(value))):
            out.append((path, "must be Float"))

    def check_boolean(value: Any, path: str, out: list[Problem]) -> None:
        if type(value) is not bool:
            out.append((path, "must be Boolean"))

    def check_id(value: Any, path: str, out: list[Problem]) -> None:
        if type(value) not in (str, int):
            out.append((path, "must be ID"))

    checkers = {
        "String": check_string,
        "Int": check_int,
        "Float": check_float,
        "Boolean": check_boolean,
        "ID": check_id,
    }
    return checkers[name]


def compile_input(gql: GraphQLInputType, rules: ValueRules = NO_RULES) -> Checker:
    """A checker for values of ``gql`` (not None), applying ``rules`` to string fields."""
    if isinstance(gql, GraphQLNonNull):
        return compile_input(gql.of_type, rules)
    if isinstance(gql, GraphQLScalarType):
        return _scalar(gql.name)
    if isinstance(gql, GraphQLList):
        return _list(gql, rules)
    if isinstance(gql, GraphQLInputObjectType):
        return _object(gql, rules)
    raise TypeError(f"no checker for {gql}")


def _list(gql: GraphQLList[Any], rules: ValueRules) -> Checker:
    item_required = isinstance(gql.of_type, GraphQLNonNull)
    item = compile_input(gql.of_type, rules)

    def check(value: Any, path: str, out: list[Problem]) -> None:
        if type(value) is not list:
            item(value, path, out)  # GraphQL input coercion: a single value is a list of one
            return
        for i, element in enumerate(value):
            if element is None:
                if item_required:
                    out.append((f"{path}[{i}]", "required"))
            else:
                item(element, f"{path}[{i}]", out)

    return check


#: Python types a scalar accepts outright, with no further check (the hot path).
_ACCEPTED_OUTRIGHT: Final = {"String": str, "Boolean": bool, "ID": str}


class _Field:
    __slots__ = ("check", "outright", "required", "rule")

    def __init__(self, gql: GraphQLInputType, rule: ValueRule | None, rules: ValueRules) -> None:
        self.required = isinstance(gql, GraphQLNonNull)
        named = gql.of_type if isinstance(gql, GraphQLNonNull) else gql
        self.outright: type | None = (
            _ACCEPTED_OUTRIGHT.get(named.name) if isinstance(named, GraphQLScalarType) else None
        )
        self.rule = rule if self.outright is str else None
        self.check = compile_input(gql, rules)


def _object(gql: GraphQLInputObjectType, rules: ValueRules) -> Checker:
    own = rules.get(gql.name, {})
    specs = {key: _Field(f.type, own.get(key), rules) for key, f in gql.fields.items()}
    # Per field: (type accepted outright, its rule, required, checker), as a tuple for speed.
    fields = {k: (f.outright, f.rule, f.required, f.check) for k, f in specs.items()}
    required = tuple(key for key, spec in specs.items() if spec.required)  # in SDL order
    required_set = frozenset(required)
    name = gql.name

    def check(value: Any, path: str, out: list[Problem]) -> None:
        if type(value) is not dict:
            out.append((path, f"must be an object ({name})"))
            return
        get = fields.get
        for key, element in value.items():
            spec = get(key)
            if spec is None:
                out.append((_join(path, key), f"unknown field of {name}"))
                continue
            outright, rule, is_required, check_value = spec
            if type(element) is outright:
                if rule is not None:
                    broken = rule(cast(str, element))
                    if broken is not None:
                        out.append((_join(path, key), broken))
            elif element is None:
                if is_required:
                    out.append((_join(path, key), "required"))
            else:
                check_value(element, _join(path, key), out)
        if required and not required_set <= value.keys():
            out.extend((_join(path, key), "required") for key in required if key not in value)

    return check


def literal_value(node: ValueNode, variables: dict[str, Any]) -> Any:
    """An inline GraphQL literal as Python values, enum literals marked as such."""
    if isinstance(node, EnumValueNode):
        return EnumLiteral(node.value)
    if isinstance(node, ListValueNode):
        return [literal_value(v, variables) for v in node.values]
    if isinstance(node, ObjectValueNode):
        return {f.name.value: literal_value(f.value, variables) for f in node.fields}
    if isinstance(node, VariableNode):
        return variables.get(node.name.value)
    return value_from_ast_untyped(node, variables)
