"""Validation and mapping fused, for records an Avro decoder produced.

An Avro record read with the current edition's schema already has the catalog's
types: every field present, strings as ``str``, numbers as ``float``, counts as
``int``, eventTime an aware UTC datetime. What is left are the semantic rules
(lengths, enumerations, currency, the GraphQL Int range, finite numbers, the time
range), and those are all this path checks, while it builds the signal dict in the
same pass: no pydantic copy of the record, no ``ValidEvent`` in between.

It only ever says "this signal" or "not sure": anything unexpected (a rule broken,
a value of another type, an unknown or missing key) returns None and the record
goes the strict way (``validate_event`` then ``map_event``), which accepts or
explains the rejection. So the strict path stays the one definition of the rules;
a property test holds this one to it (same signal, or both reject).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final, NamedTuple

from pipeline.signals import catalog
from pipeline.signals.catalog import FieldSpec, Format, Kind
from pipeline.signals.mapping import (
    DEFAULT_CATEGORY,
    MappedSignal,
    MappingOptions,
    default_effect,
    format_timestamp,
    idempotency_key,
    merge_repeated_products,
)
from pipeline.signals.validation import (
    CURRENCY_CODES,
    EARLIEST_EVENT_TIME,
    GRAPHQL_INT_MAX,
    LATEST_EVENT_TIME,
    _date_added,
)


class _Decline(Exception):
    """Not certain: let the strict path decide (raised only off the happy path)."""


#: A check takes a value of the field's Avro type (not None) and returns the value
#: the signal carries (canonical spelling), or raises _Decline.
Check = Callable[[Any], Any]


class _Field(NamedTuple):
    """A tuple: the loop below unpacks it, cheaper than four attribute reads."""

    name: str
    type: type  # the exact Python type the Avro decoder gives
    check: Check | None  # None: the type is the only rule
    required: bool


@dataclass(frozen=True, slots=True)
class _Plan:
    """One signal type's checker: its fields in catalog order and its defaults."""

    signal_type: str
    fields: tuple[_Field, ...]
    #: Keys of an Avro record of this type: the envelope plus every content field.
    size: int
    #: The effect when the producer sends none, unless it depends on the content.
    fixed_effect: str | None
    effect_from_content: bool


_ENVELOPE_SIZE: Final = 5  # eventId, sessionId, identifiableAttributes, appKey, eventTime
_ATTRIBUTES: Final = catalog.IDENTIFIABLE_ATTRIBUTES


# --- one check per catalog rule ------------------------------------------------------------


def _all(checks: list[Check]) -> Check | None:
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]

    def check(value: Any) -> Any:
        for c in checks:
            value = c(value)
        return value

    return check


def _non_empty(value: str) -> str:
    if not value:
        raise _Decline
    return value


def _max_length(limit: int) -> Check:
    def check(value: str) -> str:
        if len(value) > limit:
            raise _Decline
        return value

    return check


def _enumeration(allowed: tuple[str, ...]) -> Check:
    """The canonical spelling (validation._enumeration's), exact spellings first."""
    exact = {v: v for v in allowed}
    lowered = {v.lower(): v for v in allowed}

    def check(value: str) -> str:
        canonical = exact.get(value) or lowered.get(value.lower())
        if canonical is None:
            raise _Decline
        return canonical

    return check


def _currency(value: str) -> str:
    if value in CURRENCY_CODES:
        return value
    code = value.upper()  # validation._currency canonicalises the same way
    if code not in CURRENCY_CODES:
        raise _Decline
    return code


def _date(value: str) -> str:
    try:
        return _date_added(value)
    except ValueError:
        raise _Decline from None


def _finite(value: float) -> float:
    if value - value != 0.0:  # inf - inf and nan - nan are nan
        raise _Decline
    return value


def _int_range(minimum: int | None) -> Check:
    low = -GRAPHQL_INT_MAX - 1 if minimum is None else minimum

    def check(value: int) -> int:
        if not low <= value <= GRAPHQL_INT_MAX:
            raise _Decline
        return value

    return check


def _strings(value: list[Any]) -> list[Any]:
    for v in value:
        if type(v) is not str:
            raise _Decline
    return value


def _custom_attributes(value: list[Any]) -> list[Any]:
    for pair in value:
        if (
            type(pair) is not dict
            or len(pair) != 2
            or type(pair.get("name")) is not str
            or not pair["name"]
            or type(pair.get("value")) is not str
        ):
            raise _Decline
    return value


def _items(fields: tuple[_Field, ...], merge: bool) -> Check:
    """Item objects: each checked like a record, absent (None) fields left out."""
    size = len(fields)

    def check(value: list[Any]) -> list[dict[str, Any]]:
        items = []
        for item in value:
            if type(item) is not dict or len(item) != size:
                raise _Decline
            items.append(_content(fields, item, {}))
        return merge_repeated_products(items) if merge else items

    return check


def _field(fs: FieldSpec) -> _Field:
    checks: list[Check] = []
    match fs.kind:
        case Kind.STRING:
            want: type = str
            if fs.required:
                checks.append(_non_empty)
            if fs.max_length is not None:
                checks.append(_max_length(fs.max_length))
            if fs.format is Format.CURRENCY:
                checks.append(_currency)
            elif fs.format is Format.DATE_ADDED:
                checks.append(_date)
            if fs.enum is not None:
                checks.append(_enumeration(fs.enum))
        case Kind.NUMBER:
            want = float
            checks.append(_finite)
        case Kind.INTEGER:
            want = int
            checks.append(_int_range(fs.minimum))
        case Kind.BOOLEAN:
            want = bool
        case Kind.STRING_LIST:
            want = list
            checks.append(_strings)
        case Kind.CUSTOM_ATTRIBUTES:
            want = list
            checks.append(_custom_attributes)
        case Kind.ITEMS:
            assert fs.items is not None
            want = list
            item_fields = tuple(_field(i) for i in fs.items.fields)
            checks.append(_items(item_fields, fs.items.merge_repeated_products))
    return _Field(fs.name, want, _all(checks), fs.required)


def _content(
    fields: tuple[_Field, ...], record: dict[str, Any], out: dict[str, Any]
) -> dict[str, Any]:
    """The fields the producer sent (not None), checked, in catalog order, into ``out``."""
    for name, want, check, required in fields:
        value = record[name]  # KeyError: not a record of this schema (caught above)
        if value is None:
            if required:
                raise _Decline
            continue
        if type(value) is not want:
            raise _Decline
        out[name] = value if check is None else check(value)
    return out


@cache
def _plan(signal_type: str) -> _Plan:
    spec = catalog.SIGNALS[signal_type]
    from_content = signal_type == "onSiteSearch"  # see mapping.default_effect
    return _Plan(
        signal_type,
        tuple(_field(fs) for fs in spec.fields),
        _ENVELOPE_SIZE + len(spec.fields),
        None if from_content else spec.suggested_effect,
        from_content,
    )


# --- the fused path -------------------------------------------------------------------------


def _identity(attributes: Any) -> dict[str, str]:
    if type(attributes) is not dict or len(attributes) != len(_ATTRIBUTES):
        raise _Decline
    identity = {}
    for name in _ATTRIBUTES:
        value = attributes[name]
        if value is not None and type(value) is not str:
            raise _Decline
        if value:  # mapping.identifiable_attributes leaves out empty ones
            identity[name] = value
    return identity


def _optional_str(value: Any) -> str | None:
    if value is not None and type(value) is not str:
        raise _Decline
    return value


def map_avro_record(
    signal_type: str, record: dict[str, Any], options: MappingOptions
) -> MappedSignal | None:
    """The signal ``validate_event`` then ``map_event`` would make, or None: not sure.

    ``record`` is what the Avro decoder returned for the type's current-edition reader
    schema. None also for every record the strict path rejects: it explains why.
    """
    plan = _plan(signal_type)
    if len(record) != plan.size:  # unknown or missing keys: the strict path names them
        return None
    try:
        session = record["sessionId"]
        if type(session) is not str or not session:
            return None
        moment = record["eventTime"]
        if (
            type(moment) is not datetime
            or moment.tzinfo is not UTC
            or not EARLIEST_EVENT_TIME <= moment < LATEST_EVENT_TIME
        ):
            return None
        app_key = _optional_str(record["appKey"]) or options.default_app_key
        if not app_key:
            return None
        identity = _identity(record["identifiableAttributes"])
        if not identity and not options.allow_anonymous:
            return None
        event_id = _optional_str(record["eventId"])
        content = _content(plan.fields, record, {"signalType": signal_type})
    except (_Decline, KeyError):
        return None
    if "category" not in content:
        content["category"] = DEFAULT_CATEGORY
    if "effect" not in content:
        effect = (
            default_effect(signal_type, content) if plan.effect_from_content else plan.fixed_effect
        )
        if effect is not None:
            content["effect"] = effect
    content["signalTimestamp"] = format_timestamp(moment)
    signal = {
        "appKey": app_key,
        "identifiableAttributes": identity,
        "sessionId": session,
        "signalContent": content,
    }
    return MappedSignal(signal_type, idempotency_key(event_id, signal), signal)
