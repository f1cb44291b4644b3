"""Avro framing on the wire: Confluent's (magic 0, schema id) and single-object encoding
(C3 01, CRC-64-AVRO fingerprint), and encoding records in either (producers, tests).
Also the writer schema id carried in a record header instead (confluent-kafka's
``header_schema_id_serializer``): finding that header and checking its value.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Final

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

CONFLUENT_MAGIC: Final = 0
SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"

#: The header confluent-kafka's serializers put the value's writer schema id in when
#: configured with ``header_schema_id_serializer`` (the key's, ``__key_schema_id``, is
#: not read: keys are not decoded). Its value: magic 0 and a 4-byte big-endian id, or
#: magic 1 and the schema's 16-byte GUID (what that serializer writes).
VALUE_SCHEMA_ID_HEADER: Final = "__value_schema_id"
GUID_MAGIC: Final = 1
ID_HEADER_SIZE: Final = 5
GUID_HEADER_SIZE: Final = 17

_HEADER_RULE: Final = (
    "expected 0x00 then a 4-byte big-endian schema id, or 0x01 then a 16-byte GUID"
)


def schema_id_header(headers: Any) -> object:
    """The value of the value's schema id header, found as Confluent's
    ``dual_schema_id_deserializer`` finds it: the first such header in a list of pairs,
    the entry in a dict. None: no such header, or its value is null (the value's own
    framing then decides, as there).
    """
    if isinstance(headers, dict):
        return headers.get(VALUE_SCHEMA_ID_HEADER)
    for name, value in headers:
        if name == VALUE_SCHEMA_ID_HEADER:
            return value
    return None


def schema_id_header_problem(raw: object) -> str | None:
    """What breaks the header rule in a schema id header's value; None: well-formed.

    Stricter than confluent-kafka on one point: it ignores bytes after an Avro id (they
    are Protobuf message indexes, which no Avro writer sends); here they are refused.
    """
    if not isinstance(raw, bytes):
        return f"the value is {type(raw).__name__}, not bytes ({_HEADER_RULE})"
    if not raw:
        return f"the value is empty ({_HEADER_RULE})"
    magic = raw[0]
    if magic == CONFLUENT_MAGIC:
        expected = ID_HEADER_SIZE
    elif magic == GUID_MAGIC:
        expected = GUID_HEADER_SIZE
    else:
        return f"unknown magic byte 0x{magic:02x} ({_HEADER_RULE})"
    if len(raw) != expected:
        return f"{len(raw)} bytes with magic 0x{magic:02x}, not {expected} ({_HEADER_RULE})"
    return None


def encode_header_id(schema_id: int | None = None, guid: bytes | None = None) -> bytes:
    """A schema id header's value: by id (magic 0) or by 16-byte GUID (magic 1)."""
    if guid is not None:
        return bytes([GUID_MAGIC]) + guid
    assert schema_id is not None
    return bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big")


def full_name(schema: dict[str, Any]) -> str:
    """A named schema's full name: its namespace and name."""
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def crc64_fingerprint(schema: dict[str, Any]) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of the schema's canonical form.

    fastavro's hex digest already lists the bytes in that (little-endian) order, as
    Apache Avro's ``SchemaNormalization.parsingFingerprint`` and its single-object
    encoders write them; reading it as a number and packing it again would reverse it.
    """
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


#: Writer schemas kept parsed: by content, and the last few objects (first in, first
#: out; no JSON dump on the hot path). Both bounded: fresh dicts per event grow neither.
WRITER_CACHE_SIZE: Final = 256
_BY_OBJECT: OrderedDict[int, tuple[dict[str, Any], Any, bytes]] = OrderedDict()
_BY_OBJECT_SIZE: Final = 64


@lru_cache(maxsize=WRITER_CACHE_SIZE)
def _parsed(canonical_json: str) -> tuple[Any, bytes]:
    schema = json.loads(canonical_json)
    return fastavro.parse_schema(schema), crc64_fingerprint(schema)


def _writer(schema: dict[str, Any]) -> tuple[Any, bytes]:
    """The parsed schema and its fingerprint."""
    cached = _BY_OBJECT.get(id(schema))
    # the entry keeps the object alive, so a matching id is this very object
    if cached is not None and cached[0] is schema:
        return cached[1], cached[2]
    parsed, fp = _parsed(json.dumps(schema, sort_keys=True, separators=(",", ":")))
    _BY_OBJECT[id(schema)] = (schema, parsed, fp)
    if len(_BY_OBJECT) > _BY_OBJECT_SIZE:
        _BY_OBJECT.popitem(last=False)
    return parsed, fp


def _body(parsed: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


def encode_single_object(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Avro single-object encoding: C3 01, the CRC-64-AVRO fingerprint, the body."""
    parsed, fp = _writer(schema)
    return SINGLE_OBJECT_MAGIC + fp + _body(parsed, record)


def encode_confluent(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Confluent Schema Registry framing: magic 0, the schema id (big-endian), the body."""
    parsed, _ = _writer(schema)
    return bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big") + _body(parsed, record)
