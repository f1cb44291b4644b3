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
from typing import Any, Final

from pipeline.signals import catalog
from pipeline.signals.catalog import FieldSpec, Format, ItemSpec, Kind
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
#: A type's (or an item's) content: the record's fields checked into ``out``.
Content = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Plan:
    """One signal type's checker: its content function and its defaults."""

    signal_type: str
    content: Content
    #: Keys of an Avro record of this type: the envelope plus every content field.
    size: int
    #: The effect when the producer sends none, unless it depends on the content.
    fixed_effect: str | None
    effect_from_content: bool


_ENVELOPE_SIZE: Final = 5  # eventId, sessionId, identifiableAttributes, appKey, eventTime
_ATTRIBUTES: Final = catalog.IDENTIFIABLE_ATTRIBUTES


# --- the rules that need more than a comparison --------------------------------------------


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


def _items(item: ItemSpec) -> Check:
    """Item objects: each checked like a record, absent (None) fields left out."""
    content = _compile(item.fields, item.record_name)
    size = len(item.fields)
    merge = item.merge_repeated_products

    def check(value: list[Any]) -> list[dict[str, Any]]:
        items = []
        for element in value:
            if type(element) is not dict or len(element) != size:
                raise _Decline
            items.append(content(element, {}))
        return merge_repeated_products(items) if merge else items

    return check


# --- one content function per type, compiled from the catalog ------------------------------

_TYPES: Final = {
    Kind.STRING: "str",
    Kind.NUMBER: "float",
    Kind.INTEGER: "int",
    Kind.BOOLEAN: "bool",
    Kind.STRING_LIST: "list",
    Kind.CUSTOM_ATTRIBUTES: "list",
    Kind.ITEMS: "list",
}


def _rules(fs: FieldSpec, env: dict[str, Any]) -> list[str]:
    """Statements that check ``v`` (not None, of the field's type) and leave the value
    the signal carries in ``v``; the few rules that are not one comparison are
    functions in ``env``."""

    def call(check: Check) -> str:
        name = f"_check_{len(env)}"
        env[name] = check
        return f"v = {name}(v)"

    match fs.kind:
        case Kind.STRING:
            rules = []
            if fs.required:
                rules.append("if not v: raise _Decline")
            if fs.max_length is not None:
                rules.append(f"if len(v) > {fs.max_length}: raise _Decline")
            if fs.format is Format.CURRENCY:
                rules.append(call(_currency))
            elif fs.format is Format.DATE_ADDED:
                rules.append(call(_date))
            if fs.enum is not None:
                rules.append(call(_enumeration(fs.enum)))
            return rules
        case Kind.NUMBER:
            return ["if v - v != 0.0: raise _Decline"]  # inf - inf and nan - nan are nan
        case Kind.INTEGER:
            low = -GRAPHQL_INT_MAX - 1 if fs.minimum is None else fs.minimum
            return [f"if not {low} <= v <= {GRAPHQL_INT_MAX}: raise _Decline"]
        case Kind.STRING_LIST:
            return [call(_strings)]
        case Kind.CUSTOM_ATTRIBUTES:
            return [call(_custom_attributes)]
        case Kind.ITEMS:
            assert fs.items is not None
            return [call(_items(fs.items))]
    return []


def _compile(specs: tuple[FieldSpec, ...], label: str) -> Content:
    """``content(record, out)``: every field of ``specs``, in catalog order, checked into
    ``out`` when the producer sent it (not None). Straight-line code generated from the
    catalog (a loop over the fields cost three times as much: 25 fields, ~6 µs)."""
    env: dict[str, Any] = {"_Decline": _Decline}
    lines = ["def content(record, out):"]
    for fs in specs:
        name = repr(fs.name)
        lines.append(f"    v = record[{name}]")  # KeyError: not a record of this schema
        lines.append("    if v is not None:")
        lines.append(f"        if type(v) is not {_TYPES[fs.kind]}: raise _Decline")
        lines += [f"        {rule}" for rule in _rules(fs, env)]
        lines.append(f"        out[{name}] = v")
        if fs.required:
            lines.append("    else: raise _Decline")
    lines.append("    return out")
    code = compile("\n".join(lines), f"<fused content of {label}>", "exec")
    exec(code, env)  # source generated above from the catalog alone, nothing else
    content: Content = env["content"]
    return content


@cache
def _plan(signal_type: str) -> _Plan:
    spec = catalog.SIGNALS[signal_type]
    from_content = signal_type == "onSiteSearch"  # see mapping.default_effect
    return _Plan(
        signal_type,
        _compile(spec.fields, spec.record_name),
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
        content = plan.content(record, {"signalType": signal_type})
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
