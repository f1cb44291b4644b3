"""Avro schemas generated from the catalog: one record per signal type and edition.

Pure functions; ``write_schemas`` is the only I/O. Rules:

- Envelope first, identical in both editions: eventId, sessionId,
  identifiableAttributes, appKey, eventTime (timestamp-millis).
- Then the signal's fields, flat, in catalog order. signalType is not a field: the
  record's name gives the type.
- A field is non-null in the current edition only when it is required now and was
  required in the earlier edition too (or the type is new); every other field is
  nullable with a null default, so v1 data resolves with the v2 reader and later
  editions can evolve compatibly.
- A field renamed since the earlier edition carries the old name as an alias.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from pipeline.signals import catalog
from pipeline.signals.catalog import V1, FieldSpec, ItemSpec, Kind, SignalSpec

NAMESPACE: Final = catalog.AVRO_NAMESPACE
EDITIONS: Final = (1, 2)

_PRIMITIVES: Final = {
    Kind.STRING: "string",
    Kind.NUMBER: "double",
    Kind.INTEGER: "long",
    Kind.BOOLEAN: "boolean",
}


def _envelope() -> list[dict[str, Any]]:
    identity_fields = [
        {"name": name, "type": ["null", "string"], "default": None}
        for name in catalog.IDENTIFIABLE_ATTRIBUTES
    ]
    return [
        {
            "name": "eventId",
            "type": ["null", "string"],
            "default": None,
            "doc": "Unique id of the event: the signal's idempotency key.",
        },
        {"name": "sessionId", "type": "string", "doc": "The visitor's session id."},
        {
            "name": "identifiableAttributes",
            "type": {
                "type": "record",
                "name": "IdentifiableAttributes",
                "fields": identity_fields,
            },
            "default": dict.fromkeys(catalog.IDENTIFIABLE_ATTRIBUTES),
            "doc": "Who the visitor is; at least one attribute is required.",
        },
        {
            "name": "appKey",
            "type": ["null", "string"],
            "default": None,
            "doc": "Overrides the configured default appKey.",
        },
        {
            "name": "eventTime",
            "type": {"type": "long", "logicalType": "timestamp-millis"},
            "doc": "When the event happened; sent as signalTimestamp.",
        },
    ]


def _doc(spec: FieldSpec) -> str | None:
    rules = []
    if spec.enum:
        rules.append("one of " + ", ".join(spec.enum) + " (any case; validated by the pipeline)")
    if spec.format:
        rules.append(str(spec.format))
    if spec.max_length:
        rules.append(f"at most {spec.max_length} characters")
    if spec.minimum is not None:
        rules.append(f"at least {spec.minimum}")
    return "; ".join(rules) or None


class _Names:
    """Named types already defined in the schema being built (define once, then refer)."""

    def __init__(self) -> None:
        self.defined: set[str] = set()

    def first(self, name: str) -> bool:
        if name in self.defined:
            return False
        self.defined.add(name)
        return True


def _type(spec: FieldSpec, edition: int, names: _Names) -> Any:
    if spec.kind in _PRIMITIVES:
        return _PRIMITIVES[spec.kind]
    if spec.kind is Kind.STRING_LIST:
        return {"type": "array", "items": "string"}
    if spec.kind is Kind.CUSTOM_ATTRIBUTES:
        if not names.first("CustomAttribute"):
            return {"type": "array", "items": "CustomAttribute"}
        record = {
            "type": "record",
            "name": "CustomAttribute",
            "fields": [{"name": "name", "type": "string"}, {"name": "value", "type": "string"}],
        }
        return {"type": "array", "items": record}
    assert spec.items is not None
    return {"type": "array", "items": _item_record(spec.items, edition, names)}


def _item_record(item: ItemSpec, edition: int, names: _Names) -> Any:
    if not names.first(item.record_name):
        return item.record_name
    return {
        "type": "record",
        "name": item.record_name,
        "fields": _fields(item.fields, edition, names, type_is_new=False),
    }


def _non_null(spec: FieldSpec, edition: int, type_is_new: bool) -> bool:
    if edition == 1:
        return spec.v1 is V1.REQUIRED
    return spec.required and (type_is_new or spec.v1 is V1.REQUIRED)


def _fields(
    specs: tuple[FieldSpec, ...], edition: int, names: _Names, *, type_is_new: bool
) -> list[dict[str, Any]]:
    fields = []
    for spec in specs:
        if edition == 1 and spec.v1 is V1.ABSENT:
            continue
        name = spec.v1_name if edition == 1 and spec.v1_name else spec.name
        avro_type = _type(spec, edition, names)
        field: dict[str, Any] = {"name": name}
        if _non_null(spec, edition, type_is_new):
            field["type"] = avro_type
        else:
            field["type"] = ["null", avro_type]
            field["default"] = None
        if edition == 2 and spec.v1_name:
            field["aliases"] = [spec.v1_name]
        doc = _doc(spec)
        if doc:
            field["doc"] = doc
        fields.append(field)
    return fields


def record_schema(spec: SignalSpec, edition: int) -> dict[str, Any]:
    """The Avro schema of one signal type in one edition."""
    if edition == 1 and not spec.in_v1:
        raise ValueError(f"{spec.signal_type} did not exist in the earlier edition")
    names = _Names()
    edition_name = "current" if edition == 2 else "earlier"
    return {
        "type": "record",
        "name": spec.record_name,
        "namespace": NAMESPACE,
        "doc": f"{spec.signal_type} signal ({edition_name} edition). {spec.doc}".strip(),
        "fields": [
            *_envelope(),
            *_fields(spec.fields, edition, names, type_is_new=not spec.in_v1),
        ],
    }


def generated_files() -> dict[str, str]:
    """Relative path -> file content, for every schema of every edition."""
    files = {}
    for edition in EDITIONS:
        for spec in catalog.SIGNALS.values():
            if edition == 1 and not spec.in_v1:
                continue
            text = json.dumps(record_schema(spec, edition), indent=2, ensure_ascii=False)
            files[f"v{edition}/{spec.record_name}.avsc"] = text + "\n"
    return files


def schema_texts(directory: Path) -> dict[str, str]:
    """``v<edition>/<Record>.avsc`` -> text: the directory's files, or the generator's own
    when the directory is the default one and holds none (an installed wheel)."""
    from pipeline.config import DEFAULT_AVRO_DIR

    files = {
        str(path.relative_to(directory)): path.read_text(encoding="utf-8")
        for path in sorted(directory.glob("v*/*.avsc"))
    }
    if not files and directory == DEFAULT_AVRO_DIR:
        return generated_files()
    if not files:
        raise FileNotFoundError(f"no Avro schemas under {directory}/v*/")
    return files


def read_schemas(directory: Path) -> list[tuple[int, dict[str, Any]]]:
    """(edition, schema) of every schema of ``schema_texts``, in path order."""
    return [
        (int(relative.split("/", 1)[0].removeprefix("v")), json.loads(text))
        for relative, text in sorted(schema_texts(directory).items())
    ]


def stale_files(directory: Path) -> list[str]:
    """Files under ``directory`` that differ from (or are missing from) the generator's."""
    expected = generated_files()
    stale = [
        path
        for path, text in expected.items()
        if not (directory / path).is_file() or (directory / path).read_text() != text
    ]
    present = {str(p.relative_to(directory)) for p in directory.glob("v*/*.avsc")}
    return sorted(stale + sorted(present - set(expected)))


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema; remove .avsc files the catalog no longer produces."""
    expected = generated_files()
    for old in directory.glob("v*/*.avsc"):
        if str(old.relative_to(directory)) not in expected:
            old.unlink()
    written = []
    for relative, text in expected.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
