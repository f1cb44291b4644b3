"""Validation of a decoded event against the catalog.

The pydantic models are derived from ``pipeline.signals.catalog``, never written beside it:
one TypedDict per signal type (envelope plus content), validated by pydantic-core.
Validation also canonicalises what the catalog says has one canonical form
(enumeration case, currency case), so the mapping downstream is pure reshaping.

Input is the record as the Avro decoder returns it (absent optional fields are
``None``) or the JSON form of the same record (the offline check).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Final, Literal, NotRequired, Protocol, Required

import pycountry
from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from typing_extensions import TypedDict

from pipeline.signals import catalog
from pipeline.signals.catalog import FieldSpec, Format, ItemSpec, Kind
from pipeline.signals.outcomes import Problem, Reason, Rejection

CURRENCY_CODES: Final = frozenset(c.alpha_3 for c in pycountry.currencies)
_DATE_ADDED = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}", re.ASCII)
_FORBID_EXTRA = ConfigDict(extra="forbid")
#: Rejection messages travel in dead-letter headers and logs: a few problems, short values.
MAX_PROBLEMS: Final = 10
#: DECISION: the spec's "Number (integer)" fields are GraphQL Int, a signed 32-bit
#: integer; a larger count (Avro longs reach 2^63) would only be refused by the API.
GRAPHQL_INT_MAX: Final = 2**31 - 1
MAX_SHOWN_CHARS: Final = 60


# Not frozen: one per event, and a frozen dataclass's __init__ costs three times as
# much (object.__setattr__ per field). Nothing mutates it.
@dataclass(slots=True)
class ValidEvent:
    """An event that passed validation: envelope and content, canonicalised.

    ``fields`` has the record's keys: an optional field the producer did not send is
    absent or None (Avro decodes every field of the reader schema).
    """

    signal_type: str
    fields: dict[str, Any]


def shown(value: object) -> str:
    """``repr(value)``, cut short: a hostile value must not make a huge message."""
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[: MAX_SHOWN_CHARS - 1]}…({len(text)} characters)"


# --- rule functions (pydantic after-validators) ---------------------------------------


def _currency(value: str) -> str:
    code = value.upper()
    if code not in CURRENCY_CODES:
        raise ValueError(f"{shown(value)} is not an ISO 4217 code")
    return code


def _date_added(value: str) -> str:
    try:
        ok = _DATE_ADDED.fullmatch(value) and datetime.fromisoformat(value)
    except ValueError:
        ok = None
    if not ok:
        raise ValueError(f"{shown(value)} does not match yyyy-MM-dd HH:mm:ss.SSS")
    return value


#: signalTimestamp must be a date Connect and every ISO 8601 reader can take: a
#: four-digit year, and nothing a clock could not plausibly say.
EARLIEST_EVENT_TIME: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME: Final = datetime(2100, 1, 1, tzinfo=UTC)


def _enumeration(allowed: tuple[str, ...]) -> Callable[[str], str]:
    """Accept any case, return the catalog's canonical spelling."""
    canonical = {v.lower(): v for v in allowed}
    listed = ", ".join(allowed)

    def check(value: str) -> str:
        try:
            return canonical[value.lower()]
        except KeyError:
            raise ValueError(f"{shown(value)} is not one of {listed}") from None

    return check


# --- model derivation -----------------------------------------------------------------

_STRICT: Final = {"strict": True}


def _annotation(spec: FieldSpec, *, fast: bool = False) -> Any:
    """The pydantic type of one catalog field.

    ``fast``: a string rule that calls Python first tries, in pydantic-core, the values
    that certainly pass (the canonical spellings; dates that exist in every month);
    anything else goes through the rule itself. Same decisions, fewer Python calls.
    """
    match spec.kind:
        case Kind.STRING:
            rules: list[Any] = []
            if spec.format is Format.CURRENCY:
                rules.append(AfterValidator(_currency))
            elif spec.format is Format.DATE_ADDED:
                rules.append(AfterValidator(_date_added))
            if spec.enum is not None:
                rules.append(AfterValidator(_enumeration(spec.enum)))
            length = Field(
                strict=True,
                min_length=1 if spec.required else None,
                max_length=spec.max_length,
            )
            checked = Annotated[str, length, *rules]
            certain = _certainly_valid(spec) if fast and rules else None
            if certain is None:
                return checked
            return Annotated[certain | checked, Field(union_mode="left_to_right")]
        case Kind.NUMBER:
            return Annotated[float, Field(strict=True, allow_inf_nan=False)]
        case Kind.INTEGER:
            return Annotated[int, Field(strict=True, ge=spec.minimum, le=GRAPHQL_INT_MAX)]
        case Kind.BOOLEAN:
            return Annotated[bool, Field(strict=True)]
        case Kind.STRING_LIST:
            return list[Annotated[str, Field(strict=True)]]
        case Kind.CUSTOM_ATTRIBUTES:
            return list[_CustomAttribute]
        case Kind.ITEMS:
            assert spec.items is not None
            return list[_item_model(spec.items)]  # type: ignore[misc]
    raise AssertionError(spec.kind)


class _CustomAttribute(TypedDict):
    __pydantic_config__ = _FORBID_EXTRA  # type: ignore[misc]
    name: Annotated[str, Field(strict=True, min_length=1)]
    value: Annotated[str, Field(strict=True)]


class _IdentifiableAttributes(TypedDict, total=False):
    __pydantic_config__ = _FORBID_EXTRA  # type: ignore[misc]
    contactKey: Annotated[str | None, Field(strict=True)]
    email: Annotated[str | None, Field(strict=True)]
    sms: Annotated[str | None, Field(strict=True)]
    whatsapp: Annotated[str | None, Field(strict=True)]


def _certainly_valid(spec: FieldSpec) -> Any:
    """Values of a string field that pass its Python rules unchanged, as a native type."""
    if spec.enum is not None:
        return Literal[spec.enum]
    if spec.format is Format.CURRENCY:
        return Literal[tuple(sorted(CURRENCY_CODES))]
    if spec.format is Format.DATE_ADDED:
        return Annotated[str, Field(strict=True, pattern=_DAY_1_TO_28)]
    return None


#: yyyy-MM-dd HH:mm:ss.SSS certainly valid: years 1000..9999, a day every month has
#: (29..31 and the rest go to _date_added). ASCII digits: Rust's \d is Unicode.
_DAY_1_TO_28: Final = (
    r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    r" ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}$"
)


def _typed_fields(specs: tuple[FieldSpec, ...], *, fast: bool = False) -> dict[str, Any]:
    """Optional fields may be absent or null; required ones must be there, not null."""
    fields: dict[str, Any] = {}
    for s in specs:
        annotation = _annotation(s, fast=fast)
        fields[s.name] = Required[annotation] if s.required else NotRequired[annotation | None]
    return fields


def _typed_dict(name: str, fields: dict[str, Any], config: ConfigDict = _FORBID_EXTRA) -> Any:
    make: Any = TypedDict  # the functional form, with a computed name and fields
    model = make(name, fields)
    model.__pydantic_config__ = config
    return model


@cache
def _item_model(item: ItemSpec) -> Any:
    return _typed_dict(item.record_name, _typed_fields(item.fields))


_ENVELOPE: Final[dict[str, Any]] = {
    "eventId": NotRequired[Annotated[str | None, Field(strict=True)]],
    "sessionId": Required[Annotated[str, Field(strict=True, min_length=1)]],
    "identifiableAttributes": NotRequired[_IdentifiableAttributes | None],
    "appKey": NotRequired[Annotated[str | None, Field(strict=True)]],
    # Native pydantic-core checks (no Python call per event): an aware datetime, or
    # ISO 8601 text / epoch milliseconds in the JSON form, within the plausible range.
    "eventTime": Required[
        Annotated[AwareDatetime, Field(ge=EARLIEST_EVENT_TIME, lt=LATEST_EVENT_TIME)]
    ],
    # The JSON form names its type; the Avro form's record name does (see codec).
    "signalType": NotRequired[str | None],
}


def _adapter(signal_type: str, *, fast: bool = False) -> TypeAdapter[Any]:
    """The envelope and the type's content, every optional field nullable.

    Absent optional fields arrive as None from Avro and may be null in the JSON form:
    they are validated as they come (no filtered copy of the record first). ``fast``:
    see _Validators.
    """
    spec = catalog.SIGNALS[signal_type]
    fields = {**_ENVELOPE, **_typed_fields(spec.fields, fast=fast)}
    config = ConfigDict(extra="ignore" if fast else "forbid")
    return TypeAdapter(_typed_dict(spec.record_name, fields, config))


class _Validator(Protocol):
    def validate_python(self, input: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Validators:
    """One signal type's validators (pydantic-core's, called without TypeAdapter's wrapper).

    Both derive from the catalog and decide alike (a test holds them to it); ``fast``
    is cheaper on valid events. It ignores unknown top-level keys instead of listing
    them (checking each key of the record costs a fifth of the validation:
    ``validate_event`` compares sizes instead, O(1)), and tries natively the values of
    string rules that certainly pass (see _annotation). An event with unknown keys, or
    any problem, goes through ``strict``, so rejections are exactly the strict model's.
    """

    fast: _Validator
    strict: _Validator
    #: The type has fields renamed since the earlier edition (see _upgrade_renamed_fields).
    renames: bool


@cache
def _validators(signal_type: str) -> _Validators:
    return _Validators(
        _adapter(signal_type, fast=True).validator,
        _adapter(signal_type).validator,
        signal_type in _TYPES_WITH_RENAMES,
    )


# --- validation ---------------------------------------------------------------------

_RENAMED_ITEM_FIELDS: Final = {
    (spec.signal_type, fs.name): {i.v1_name: i.name for i in fs.items.fields if i.v1_name}
    for spec in catalog.SIGNALS.values()
    for fs in spec.fields
    if fs.items is not None and any(i.v1_name for i in fs.items.fields)
}


_TYPES_WITH_RENAMES: Final = frozenset(owner for owner, _ in _RENAMED_ITEM_FIELDS)


def _upgrade_renamed_fields(signal_type: str, record: Mapping[str, Any]) -> Mapping[str, Any]:
    """Earlier-edition names (order item ``quantity``) become the current ones.

    Avro events get this from schema resolution (field aliases); the JSON form of an
    earlier-edition event gets it here.
    """
    for (owner, list_field), renames in _RENAMED_ITEM_FIELDS.items():
        items = record.get(list_field) if owner == signal_type else None
        if not isinstance(items, list) or not any(
            isinstance(i, dict) and old in i for i in items for old in renames
        ):
            continue
        upgraded = [
            {renames.get(k, k): v for k, v in i.items()}
            if isinstance(i, dict) and not any(new in i for new in renames.values())
            else i
            for i in items
        ]
        record = {**record, list_field: upgraded}
    return record


def field_path(loc: tuple[str | int, ...]) -> str:
    """``('orderedItems', 1, 'unitPrice')`` -> ``orderedItems[1].unitPrice``.

    A name longer than MAX_SHOWN_CHARS (an unknown key in the JSON form) is cut short.
    """
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            if len(part) > MAX_SHOWN_CHARS:
                part = f"{part[: MAX_SHOWN_CHARS - 1]}…"
            path += f".{part}" if path else part
    return path


_RULES: Final = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "string_unicode": "must be valid Unicode text (it has an unpaired surrogate)",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "list_type": "must be an array",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "datetime_type": "must be an ISO 8601 date-time or epoch milliseconds",
}


#: Rules whose message starts with the offending value.
_VALUE_RULES: Final = {
    "datetime_parsing": "is not an ISO 8601 date-time",
    "datetime_from_date_parsing": "is not an ISO 8601 date-time",
    "datetime_object_invalid": "is not an ISO 8601 date-time",
    "timezone_aware": "has no UTC offset (e.g. 2025-08-31T08:29:30.001Z)",
}


def _rule(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if error.get("input", 0) is None and kind.endswith("_type"):
        return "required"
    if kind in _VALUE_RULES:
        return f"{shown(error.get('input'))} {_VALUE_RULES[kind]}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "string_too_long":
        return f"longer than {ctx['max_length']} characters"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "greater_than_equal":
        return f"must be at least {_show(ctx['ge'])}"
    if kind == "less_than_equal":
        return f"must be at most {_show(ctx['le'])}"
    if kind == "less_than":
        return f"must be before {_show(ctx['lt'])}"
    return _RULES.get(kind, str(error["msg"]))


def _show(limit: object) -> str:
    return limit.isoformat() if isinstance(limit, datetime) else str(limit)


def _problems(error: PydanticValidationError) -> tuple[Problem, ...]:
    """The first MAX_PROBLEMS problems, then a count of the rest (5,000 bad items must
    not make a 250 kB dead-letter header)."""
    problems: list[Problem] = []
    errors = error.errors(include_url=False)
    for e in errors[:MAX_PROBLEMS]:
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        problems.append(Problem(field_path(loc), _rule(e)))
    if len(errors) > MAX_PROBLEMS:
        problems.append(Problem("", f"and {len(errors) - MAX_PROBLEMS} more problems"))
    return tuple(problems)


def validate_event(signal_type: str, record: Mapping[str, Any]) -> ValidEvent | Rejection:
    """Check one decoded event against the catalog's rules for its type."""
    if signal_type not in catalog.SIGNALS:
        known = ", ".join(catalog.SIGNAL_TYPES)
        return Rejection.single(
            Reason.VALIDATION, "signalType", f"{shown(signal_type)} is not one of {known}"
        )
    validators = _validators(signal_type)
    declared = record.get("signalType")
    if declared is not None and declared != signal_type:
        return Rejection.single(
            Reason.VALIDATION, "signalType", f"{shown(declared)} does not match {signal_type!r}"
        )
    if validators.renames:
        record = _upgrade_renamed_fields(signal_type, record)
    try:
        fields = validators.fast.validate_python(record)
        # Every key of the record that the model knows is in the result (absent fields
        # as None): a shorter result means unknown keys, which `strict` names.
        if len(fields) == len(record):
            return ValidEvent(signal_type, fields)
    except PydanticValidationError:
        pass
    try:
        fields = validators.strict.validate_python(record)
    except PydanticValidationError as error:
        return Rejection(Reason.VALIDATION, _problems(error))
    return ValidEvent(signal_type, fields)  # not reached: `fast` accepts what `strict` does
