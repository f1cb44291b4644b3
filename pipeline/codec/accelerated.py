"""An accelerated reader for Avro bodies (cavro, Cython), with fastavro as the reference.

Used only where it is known to give exactly fastavro's output: a writer schema read
as is (no resolution: the writer is the reader) made of the types the generated
schemas use (records, arrays, unions, null, boolean, long, double, string and
``timestamp-millis``). Everything else, schema resolution included, stays with
fastavro. A body cavro cannot read (malformed, truncated, trailing bytes) returns
``None``: the caller then reads it with fastavro, which says what is wrong, so
failures are fastavro's own. ``tests/unit/test_decoder_differential.py`` holds the
two to identical results.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import Any, Final

#: Reads one body from ``value[start:]``: the record, or None (read it with fastavro).
FastRead = Callable[[bytes, int], "dict[str, Any] | None"]

_PRIMITIVES: Final = frozenset({"null", "boolean", "long", "double", "string"})
_LOGICAL: Final = {"timestamp-millis": "long"}


@cache
def _cavro() -> ModuleType | None:
    """Imported on first use: it brings numpy (about 20 MB and 0.3 s), which a
    decoder set to fastavro never pays."""
    try:
        return importlib.import_module("cavro")
    except ImportError:  # an optional speed-up: without it, fastavro reads everything
        return None


def available() -> bool:
    return _cavro() is not None


def supported(schema: Any, named: frozenset[str] = frozenset()) -> bool:
    """Whether every type in the schema is one whose cavro output is tested identical."""
    if isinstance(schema, str):
        return schema in _PRIMITIVES or schema in named
    if isinstance(schema, list):
        return all(supported(branch, named) for branch in schema)
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical is not None:
        return _LOGICAL.get(logical) == kind
    if kind == "array":
        return supported(schema.get("items"), named)
    if kind == "record":
        fields = schema.get("fields")
        if not isinstance(fields, list):
            return False
        named = named | {str(schema.get("name")), _full_name(schema)}
        return all(isinstance(f, dict) and supported(f.get("type"), named) for f in fields)
    return isinstance(kind, str | list | dict) and supported(kind, named)


def _full_name(schema: dict[str, Any]) -> str:
    name = str(schema.get("name"))
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def compile_reader(writer_schema: dict[str, Any]) -> FastRead | None:
    """A fast reader for bodies written with ``writer_schema``; None if not supported."""
    cavro = _cavro()
    if cavro is None or not supported(writer_schema):
        return None
    try:
        parsed = cavro.Schema(writer_schema, record_decodes_to_dict=True)
        end = cavro.Schema({"type": "fixed", "name": "End", "size": 1})
    except Exception:  # stricter than fastavro about a name, say: fastavro reads it
        return None
    memory_reader = cavro.MemoryReader
    read = parsed.binary_read
    at_end = end.binary_read

    def fast_read(value: bytes, start: int) -> dict[str, Any] | None:
        reader = memory_reader(memoryview(value)[start:])
        try:
            record: dict[str, Any] = read(reader)
        except Exception:
            return None
        try:
            at_end(reader)  # one more byte to read: trailing bytes, fastavro says how many
        except Exception:
            return record
        return None

    return fast_read
