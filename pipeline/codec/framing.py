"""Avro framing on the wire: Confluent's (magic 0, schema id) and single-object encoding
(C3 01, CRC-64-AVRO fingerprint), and encoding records in either (producers, tests).
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
