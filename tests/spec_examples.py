"""The examples of the vendor's specification, extracted from its text.

Both editions live in ``shared/spec``; each signal type has a ``createSignals``
mutation example, and the earlier edition also a plain JSON example. They are
found by scanning the text for balanced ``{ ... }`` blocks (strings aware), so the
tests check the pipeline against the document itself, not against a copy of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from graphql import ArgumentNode, FieldNode, OperationDefinitionNode, parse
from graphql.utilities import value_from_ast_untyped

SPEC_DIR: Final = Path(os.environ.get("CONNECT_SPEC_DIR", "/work/shared/spec"))
CURRENT: Final = "001_31ec5e8a0696ea68.txt"
EARLIER: Final = "000_ea80a35cef2d89cb.txt"
EDITIONS: Final = {CURRENT: 2, EARLIER: 1}


@dataclass(frozen=True)
class SpecExample:
    """One example: ``signal`` has the createSignals input shape."""

    edition: int  # 1 earlier, 2 current
    form: str  # "mutation" or "json"
    signal: dict[str, Any]

    @property
    def signal_type(self) -> str:
        return str(self.signal["signalContent"]["signalType"])

    @property
    def id(self) -> str:
        return f"v{self.edition}-{self.form}-{self.signal_type}"


def _block_end(text: str, start: int) -> int:
    """Index just past the ``}`` that closes the ``{`` at ``start``."""
    depth = 0
    in_string = False
    i = start
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced block at {start}")


def mutation_texts(text: str) -> list[str]:
    """Every ``mutation { ... }`` in the text."""
    found: list[str] = []
    pos = text.find("mutation {")
    while pos != -1:
        end = _block_end(text, text.index("{", pos))
        found.append(text[pos:end])
        pos = text.find("mutation {", end)
    return found


def json_texts(text: str) -> list[str]:
    """Every JSON object outside the mutations that starts with ``{`` alone on a line."""
    for source in mutation_texts(text):
        text = text.replace(source, "")
    found: list[str] = []
    pos = 0
    while True:
        pos = text.find("\n{\n", pos)
        if pos == -1:
            return found
        end = _block_end(text, pos + 1)
        found.append(text[pos + 1 : end])
        pos = end


def signals_of_mutation(source: str) -> list[dict[str, Any]]:
    """The ``signals`` argument of the mutation's one ``createSignals`` field, as Python."""
    document = parse(source)
    (operation,) = document.definitions
    assert isinstance(operation, OperationDefinitionNode)
    (create,) = operation.selection_set.selections
    assert isinstance(create, FieldNode) and create.name.value == "createSignals"
    arguments: tuple[ArgumentNode, ...] = tuple(create.arguments or ())
    (signals,) = (a for a in arguments if a.name.value == "signals")
    value = value_from_ast_untyped(signals.value)
    assert isinstance(value, list)
    return value


def spec_text(name: str) -> str:
    return (SPEC_DIR / name).read_text(encoding="utf-8")


@cache
def examples(name: str) -> tuple[SpecExample, ...]:
    """All examples of one edition's file, mutations first, then JSON examples."""
    text = spec_text(name)
    edition = EDITIONS[name]
    found: list[SpecExample] = []
    for source in mutation_texts(text):
        for signal in signals_of_mutation(source):
            found.append(SpecExample(edition, "mutation", signal))
    for source in json_texts(text):
        content = json.loads(source)
        # The JSON examples are signalContent alone: no envelope.
        found.append(SpecExample(edition, "json", {"signalContent": content}))
    return tuple(found)


def all_examples() -> tuple[SpecExample, ...]:
    return examples(CURRENT) + examples(EARLIER)


# --- events derived from the catalog (shared by the rule and property tests) ----------

#: A fixed, valid envelope for events built from the catalog.
ENVELOPE: Final[dict[str, Any]] = {
    "eventId": "evt-1",
    "sessionId": "sess-1",
    "identifiableAttributes": {"email": "visitor@example.com"},
    "appKey": "app-1",
    "eventTime": "2025-08-31T08:29:30.001Z",
}


def sample_value(spec: Any) -> Any:
    """A valid value for one catalog field (``pipeline.signals.catalog.FieldSpec``)."""
    from pipeline.signals.catalog import Format, Kind

    match spec.kind:
        case Kind.STRING:
            if spec.enum is not None:
                return spec.enum[0]
            if spec.format is Format.CURRENCY:
                return "EUR"
            if spec.format is Format.DATE_ADDED:
                return "2025-04-12 08:29:30.001"
            return f"{spec.name}-value"
        case Kind.NUMBER:
            return 12.5
        case Kind.INTEGER:
            return (spec.minimum or 0) + 2
        case Kind.BOOLEAN:
            return True
        case Kind.STRING_LIST:
            return [f"https://www.example.com/{spec.name}"]
        case Kind.CUSTOM_ATTRIBUTES:
            return [{"name": "channel", "value": "web"}]
        case Kind.ITEMS:
            return [minimal_item(spec.items)]
    raise AssertionError(spec.kind)


def minimal_item(item: Any) -> dict[str, Any]:
    """An item object (``pipeline.signals.catalog.ItemSpec``) with its required fields only."""
    return {fs.name: sample_value(fs) for fs in item.fields if fs.required}


def minimal_event(signal_type: str) -> dict[str, Any]:
    """A valid JSON-form event with the envelope and the type's required fields only."""
    from pipeline.signals import catalog

    spec = catalog.SIGNALS[signal_type]
    content = {fs.name: sample_value(fs) for fs in spec.fields if fs.required}
    return {"signalType": signal_type, **ENVELOPE, **content}


def full_event(signal_type: str) -> dict[str, Any]:
    """A valid JSON-form event with every field of the type set."""
    from pipeline.signals import catalog

    spec = catalog.SIGNALS[signal_type]
    content = {fs.name: sample_value(fs) for fs in spec.fields}
    for fs in spec.fields:
        if fs.items is not None:
            content[fs.name] = [{i.name: sample_value(i) for i in fs.items.fields}]
    return {"signalType": signal_type, **ENVELOPE, **content}
