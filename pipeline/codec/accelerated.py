"""An accelerated reader for Avro bodies (cavro, Cython), with fastavro as the reference.

Used only where it is known to give exactly fastavro's output: writer (and reader)
schemas made of the types the generated schemas use (records, arrays, unions, null,
boolean, long, double, string and ``timestamp-millis``). Resolution (an earlier
edition read as the current one, ``quantity`` -> ``itemQuantity``) too, where the
only difference is the order of a record's keys, which is then put in fastavro's
order (``resolution_order``); nested records may then need one default at most.
Everything else stays with fastavro. A body cavro cannot read (malformed, truncated,
trailing bytes) returns ``None``: the caller then reads it with fastavro, which says
what is wrong, so failures are fastavro's own.
``tests/unit/test_decoder_differential.py`` holds the two to identical results.
"""

from __future__ import annotations

import importlib
import os
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


def supported(schema: Any, named: frozenset[str] | None = frozenset()) -> bool:
    """Whether every type in the schema is one whose cavro output is tested identical.

    A type may name an enclosing record (recursion) unless ``named`` is None.
    """
    if isinstance(schema, str):
        return schema in _PRIMITIVES or (named is not None and schema in named)
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
        if named is not None:
            named = named | {str(schema.get("name")), _full_name(schema)}
        return all(isinstance(f, dict) and supported(f.get("type"), named) for f in fields)
    return isinstance(kind, str | list | dict) and supported(kind, named)


def _full_name(schema: dict[str, Any]) -> str:
    name = str(schema.get("name"))
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _match(writer: dict[str, Any], reader: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """fastavro's record resolution, names only: the reader fields the writer's fields
    fill (by name, else alias) in writer order, and the reader fields left to their
    defaults in reader order. None: a reader field matched twice (fastavro's to judge).
    """
    remaining = {f["name"]: f for f in reader["fields"]}
    aliases = {alias: f for f in reader["fields"] for alias in f.get("aliases", ())}
    matched = []
    for field in writer["fields"]:
        found = remaining.get(field["name"], aliases.get(field["name"]))
        if found is None:
            continue  # skipped: the reader does not have it
        if found["name"] not in remaining:
            return None
        matched.append(found["name"])
        del remaining[found["name"]]
    return matched, list(remaining)


def resolution_order(writer: dict[str, Any], reader: dict[str, Any]) -> list[str] | None:
    """The keys fastavro gives reading ``writer`` data as ``reader``, in its order."""
    match = _match(writer, reader)
    return None if match is None else match[0] + match[1]


def _nested_records(schema: Any, found: dict[str, Any]) -> dict[str, Any]:
    """Every record defined inside ``schema`` (not itself), by short name."""
    children: list[Any] = []
    if isinstance(schema, list):
        children = schema
    elif isinstance(schema, dict) and schema.get("type") == "record":
        children = [field["type"] for field in schema["fields"]]
    elif isinstance(schema, dict) and schema.get("type") == "array":
        children = [schema["items"]]
    for child in children:
        if isinstance(child, dict) and child.get("type") == "record":
            found[str(child["name"]).rpartition(".")[2]] = child
        _nested_records(child, found)
    return found


def _resolved_keys(writer: dict[str, Any], reader: dict[str, Any]) -> list[str] | None:
    """The top-level key order to restore after cavro resolves; None: leave it to fastavro.

    Nested records must pair by name and need at most one default: both libraries
    then give their keys in writer order, the default last. (cavro appends several
    defaults in an order of its own; the top level is put in fastavro's explicitly.)
    """
    if not (supported(writer, None) and supported(reader, None)):
        return None  # no named references: every record is paired below
    readers = _nested_records(reader, {})
    for name, nested in _nested_records(writer, {}).items():
        counterpart = readers.get(name)
        match = None if counterpart is None else _match(nested, counterpart)
        if match is None or len(match[1]) > 1:
            return None
    return resolution_order(writer, reader)


#: The end check: every body is read followed by this secret long (drawn per process,
#: so no producer can write it). Only a body read to exactly its last byte leaves the
#: reader on the sentinel; trailing bytes put it elsewhere and a truncated body runs
#: into it. Reading one byte past the end instead raised an exception on every good
#: record (about 2 µs). The value needs all 9 bytes of its varint, so no tail of the
#: sentinel alone reads as it.
_SECRET: Final = (1 << 61) | int.from_bytes(os.urandom(7), "little")


def _as_bytes(schema: Any) -> Any:
    """The schema with every string as bytes (the same encoding: a length, the bytes)."""
    if schema == "string":
        return "bytes"
    if isinstance(schema, list):
        return [_as_bytes(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema  # a primitive or a named type
    kind = schema.get("type")
    if kind == "record":
        fields = [{**field, "type": _as_bytes(field["type"])} for field in schema["fields"]]
        return {**schema, "fields": fields}
    if kind == "array":
        return {**schema, "items": _as_bytes(schema["items"])}
    return {**schema, "type": _as_bytes(kind)}


def _parsed(
    writer_schema: dict[str, Any],
    reader_schema: dict[str, Any] | None,
    *,
    strings_as_bytes: bool = False,
    **options: Any,
) -> Any | None:
    """cavro's reader for the pair, or None where it is not known to match fastavro.

    ``strings_as_bytes``: strings are read as their UTF-8 bytes, left to the caller to
    decode (cavro's decoding costs about 0.15 µs a string more than ``bytes.decode()``);
    a default is then the UTF-8 of its text.
    """
    cavro = _cavro()
    if cavro is None or not supported(writer_schema):
        return None
    try:
        if reader_schema is not None and (
            not supported(reader_schema) or _resolved_keys(writer_schema, reader_schema) is None
        ):
            return None
        if strings_as_bytes:
            options["bytes_default_value_utf8"] = True
            writer_schema = _as_bytes(writer_schema)
            reader_schema = None if reader_schema is None else _as_bytes(reader_schema)
        parsed = cavro.Schema(writer_schema, **options)
        if reader_schema is None:
            return parsed
        return cavro.Schema(reader_schema, **options).reader_for_writer(parsed)
    except Exception:  # stricter than fastavro (a name, a promotion): fastavro reads it
        return None


#: The statements that read one body, ``value[start:]``, into ``record``: None (return)
#: where the body does not end exactly at the value's end, an exception where cavro
#: cannot read it. Generated into the readers below and into the lane's function.
_READ_BODY: Final = (
    "reader = _open(value[start:] + _suffix)",  # two copies: less than a memoryview
    "record = _read(reader)",
    "if _end(reader) != _secret: return None",
)


def _read_names(read: Callable[[Any], Any]) -> dict[str, Any]:
    """What ``_READ_BODY`` refers to, ``read`` being cavro's reader of the record."""
    cavro = _cavro()
    assert cavro is not None
    sentinel = cavro.Schema('"long"')
    return {
        "_open": cavro.MemoryReader,
        "_read": read,
        "_end": sentinel.binary_read,
        "_suffix": sentinel.binary_encode(_SECRET),
        "_secret": _SECRET,
    }


def _bounded(read: Callable[[Any], Any]) -> Callable[[bytes, int], Any]:
    """``read`` of ``value[start:]`` whose body ends exactly at the value's end; None if
    it does not, or if cavro cannot read it (malformed, truncated, trailing bytes)."""
    names = _read_names(read)
    lines = [
        "def bounded(value, start):",
        "    try:",
        *(f"        {line}" for line in _READ_BODY),
        "        return record",
        "    except Exception:",
        "        return None",
    ]
    exec(compile("\n".join(lines), "<cavro bounded read>", "exec"), names)  # our source
    bounded: Callable[[bytes, int], Any] = names["bounded"]
    return bounded


def compile_reader(
    writer_schema: dict[str, Any], reader_schema: dict[str, Any] | None = None
) -> FastRead | None:
    """A fast reader for bodies written with ``writer_schema`` (read as ``reader_schema``
    when given) to fastavro's dicts; None if not supported."""
    parsed = _parsed(writer_schema, reader_schema, record_decodes_to_dict=True)
    if parsed is None:
        return None
    bounded = _bounded(parsed.binary_read)
    if reader_schema is None:
        return bounded
    keys = _resolved_keys(writer_schema, reader_schema)
    assert keys is not None

    def in_order(value: bytes, start: int) -> dict[str, Any] | None:
        record = bounded(value, start)
        return None if record is None else {key: record[key] for key in keys}

    return in_order


def compile_object_reader(
    writer_schema: dict[str, Any], reader_schema: dict[str, Any] | None = None
) -> Callable[[bytes, int], Any] | None:
    """A reader to record objects of the reader schema (fields as attributes), with
    ``timestamp-millis`` left as epoch milliseconds and strings as their UTF-8 bytes;
    None if not supported. For the fast lane, which maps the object to a signal and
    never shows it: where fastavro gives a value, this gives the same value (the record
    object's fields, the time as the integer fastavro makes its datetime from, a
    string's bytes, which the lane decodes: fastavro's strict UTF-8 decoding)."""
    parsed = _parsed(writer_schema, reader_schema, strings_as_bytes=True, logical_types=())
    return None if parsed is None else _bounded(parsed.binary_read)


def object_body_read(
    writer_schema: dict[str, Any], reader_schema: dict[str, Any] | None = None
) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """``compile_object_reader``'s reading as statements for a generated function
    (``fused.object_lane``) with ``value`` and ``start`` in scope: they leave the
    record object in ``record``, return None where the body does not end exactly at
    the value's end, and raise where cavro cannot read it. With the names they use;
    None if not supported."""
    parsed = _parsed(writer_schema, reader_schema, strings_as_bytes=True, logical_types=())
    return None if parsed is None else (_READ_BODY, _read_names(parsed.binary_read))
