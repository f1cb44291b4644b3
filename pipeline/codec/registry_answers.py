"""The Schema Registry's answers for a schema id (or GUID): which are definitive, which
are none.

Only a registry's own "not found" codes in a JSON body make an id unknown; anything
else without a usable schema (an outage, an ingress page, a body that is no schema) is
no answer, and the record waits (``SchemaRegistryUnavailable``).
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any, Final, Protocol

from pipeline.codec.plans import DecodeFailure

#: A registry's own "not found" error codes (in a JSON body with a 404): schema 40403,
#: subject 40401 (Confluent, Karapace); confluent-kafka's in-process mock says 40400.
#: Anything else (an HTML 404 from an ingress, 5xx, -1 for an unreadable body) is no answer.
NOT_FOUND_CODES: Final = frozenset({40400, 40401, 40403})


def schema_label(schema_id: int | str) -> str:
    """``schema id 7`` for a registry id, ``schema GUID 2f0c...`` for a GUID."""
    return f"schema id {schema_id}" if isinstance(schema_id, int) else f"schema GUID {schema_id}"


class SchemaRegistryUnavailable(Exception):
    """No definitive answer from the registry for a schema id (or GUID): hold the record
    and retry."""

    def __init__(self, schema_id: int | str, cause: str) -> None:
        super().__init__(f"Schema Registry unavailable for {schema_label(schema_id)}: {cause}")
        self.schema_id = schema_id
        self.cause = cause

    def __reduce__(self) -> tuple[type[SchemaRegistryUnavailable], tuple[int | str, str]]:
        return type(self), (self.schema_id, self.cause)  # picklable (worker processes)


class SchemaLookupRunning(SchemaRegistryUnavailable):
    """The registry has not answered yet (a look-up off the poll loop still runs): hold
    the record briefly, without counting a failure."""


class RegistryClient(Protocol):
    def get_schema(self, schema_id: int) -> Any: ...

    # confluent-kafka's client also has ``get_schema_by_guid`` (GET /schemas/guids/{guid}),
    # asked for a GUID schema id header; a client without it cannot resolve GUIDs.


def answer_schema(
    schema_id: int | str, schema_type: object, text: str
) -> dict[str, Any] | DecodeFailure:
    """The registry's definitive answer for an id: an Avro record schema, or why not."""
    label = schema_label(schema_id)
    kind = str(schema_type or "AVRO")[:40]
    if kind.upper() != "AVRO":
        return DecodeFailure("unknown_schema", f"{label} is a {kind} schema, not Avro")
    try:
        schema = json.loads(text)
    except ValueError:
        return DecodeFailure("unknown_schema", f"{label}: the registered Avro schema is not JSON")
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return DecodeFailure(
            "unknown_schema", f"{label} is an Avro {avro_kind(schema)} schema, not a record"
        )
    return schema


def is_not_found(error: Exception) -> bool:
    """Only the registry's own codes in a JSON body: never a bare 404 (an ingress page)."""
    return (
        getattr(error, "http_status_code", None) == 404
        and getattr(error, "error_code", None) in NOT_FOUND_CODES
    )


_USERINFO: Final = re.compile(r"//[^/@\s]*@")


def short_cause(error: Exception) -> str:
    """A short cause for a log line: the kind and message, credentials in URLs masked."""
    text = _USERINFO.sub("//***@", f"{type(error).__name__}: {error}")
    return text if len(text) <= 300 else text[:297] + "..."


def forget(registry: object) -> None:
    """Drop the client's cached answers (confluent-kafka's ``clear_caches``), if it has one."""
    clear = getattr(registry, "clear_caches", None)
    if callable(clear):
        # a best effort: failing, the retry sees the same answer and waits again
        with contextlib.suppress(Exception):
            clear()


def avro_kind(schema: object) -> str:
    """``"string"``, ``array``, ``union``...: what a non-record Avro schema is."""
    if isinstance(schema, str):
        return json.dumps(schema[:40])
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return json.dumps(str(schema.get("type"))[:40])
    return type(schema).__name__
