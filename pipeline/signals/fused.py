"""Validation and mapping fused, for records an Avro decoder produced.

An Avro record read with the current edition's schema already has the catalog's
types: every field present, strings as ``str``, numbers as ``float``, counts as
``int``. What is left are the semantic rules (lengths, enumerations, currency, the
GraphQL Int range, finite numbers, the time range), and those are all this path
checks, while it builds the signal dict in the same pass: no pydantic copy of the
record, no ``ValidEvent`` in between.

One mapper per signal type, generated from the catalog as straight-line code (every
field unrolled, as attrs and pydantic-core do), in two shapes: a dict record with
eventTime an aware UTC datetime (fastavro's output; ``map_avro_record``), and a
record object of the catalog's schema read by attribute, eventTime as epoch
milliseconds and strings as their UTF-8 bytes (cavro's, for the codec's lane: no type
checks, since the schema fixes the types; every string decoded here, strictly, as
fastavro does; the time stays an integer until the signal's text). The lane's shape
comes as one function with the codec's reading in front (``object_lane``).

It only ever says "this signal" or "not sure": anything unexpected (a rule broken,
a value of another type, an unknown or missing key) returns None and the record
goes the strict way (``validate_event`` then ``map_event``), which accepts or
explains the rejection. So the strict path stays the one definition of the rules;
property tests hold this one to it (same signal, or both reject).
"""

from __future__ import annotations

from collections.abc import Callable
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
    format_millis,
    format_timestamp,
    idempotency_key,
    is_plain_key,
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
Content = Callable[[Any, dict[str, Any]], dict[str, Any]]
#: A record (dict or object, by the mapper's shape) to its signal, or None: not sure.
Mapper = Callable[[Any, MappingOptions], "MappedSignal | None"]

_ENVELOPE_SIZE: Final = 5  # eventId, sessionId, identifiableAttributes, appKey, eventTime
_ATTRIBUTES: Final = catalog.IDENTIFIABLE_ATTRIBUTES
#: The time range validation allows, as epoch milliseconds (both bounds whole seconds).
EARLIEST_MS: Final = int(EARLIEST_EVENT_TIME.timestamp()) * 1000
LATEST_MS: Final = int(LATEST_EVENT_TIME.timestamp()) * 1000


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


def _custom_attribute_objects(value: list[Any]) -> list[dict[str, str]]:
    """CustomAttribute records (two strings, as UTF-8 bytes) to the dicts the signal
    carries."""
    pairs = []
    for pair in value:
        name = pair.name.decode()
        if not name:
            raise _Decline
        pairs.append({"name": name, "value": pair.value.decode()})
    return pairs


def _items(item: ItemSpec, objects: bool) -> Check:
    """Item objects: each checked like a record, absent (None) fields left out."""
    content = _compile_content(item.fields, item.record_name, objects)
    size = len(item.fields)
    merge = item.merge_repeated_products

    def check(value: list[Any]) -> list[dict[str, Any]]:
        items = []
        for element in value:
            if type(element) is not dict or len(element) != size:
                raise _Decline
            items.append(content(element, {}))
        return merge_repeated_products(items) if merge else items

    def check_objects(value: list[Any]) -> list[dict[str, Any]]:
        # a record object of the reader schema has its fields: a missing one is an
        # AttributeError, which the mapper takes as "not sure"
        items = [content(element, {}) for element in value]
        return merge_repeated_products(items) if merge else items

    return check_objects if objects else check


# --- generated code ------------------------------------------------------------------------

_TYPES: Final = {
    Kind.STRING: "str",
    Kind.NUMBER: "float",
    Kind.INTEGER: "int",
    Kind.BOOLEAN: "bool",
    Kind.STRING_LIST: "list",
    Kind.CUSTOM_ATTRIBUTES: "list",
    Kind.ITEMS: "list",
}


def _get(record: str, name: str, objects: bool) -> str:
    """Source that reads one field: by attribute (record objects) or by key (dicts)."""
    return f"{record}.{name}" if objects else f"{record}[{name!r}]"


def _rules(fs: FieldSpec, env: dict[str, Any], objects: bool) -> list[str]:
    """Statements that check ``v`` (not None, of the field's type) and leave the value
    the signal carries in ``v``; the few rules that are not one comparison are
    functions in ``env``, called only for values not already canonical."""

    def call(check: Check, canonical: frozenset[str] | None = None) -> str:
        name = f"_check_{len(env)}"
        env[name] = check
        if canonical is None:
            return f"v = {name}(v)"
        env[f"{name}_canonical"] = canonical  # these pass unchanged: no call
        return f"if v not in {name}_canonical: v = {name}(v)"

    match fs.kind:
        case Kind.STRING:
            rules = ["v = v.decode()"] if objects else []
            if fs.required:
                rules.append("if not v: raise _Decline")
            if fs.max_length is not None:
                rules.append(f"if len(v) > {fs.max_length}: raise _Decline")
            if fs.format is Format.CURRENCY:
                rules.append(call(_currency, CURRENCY_CODES))
            elif fs.format is Format.DATE_ADDED:
                rules.append(call(_date))
            if fs.enum is not None:
                rules.append(call(_enumeration(fs.enum), frozenset(fs.enum)))
            return rules
        case Kind.NUMBER:
            return ["if v - v != 0.0: raise _Decline"]  # inf - inf and nan - nan are nan
        case Kind.INTEGER:
            low = -GRAPHQL_INT_MAX - 1 if fs.minimum is None else fs.minimum
            return [f"if not {low} <= v <= {GRAPHQL_INT_MAX}: raise _Decline"]
        case Kind.STRING_LIST:  # the schema's array of string
            return ["v = [*_map(_decode, v)]"] if objects else [call(_strings)]
        case Kind.CUSTOM_ATTRIBUTES:
            return [call(_custom_attribute_objects if objects else _custom_attributes)]
        case Kind.ITEMS:
            assert fs.items is not None
            return [call(_items(fs.items, objects))]
    return []


def _content_lines(
    specs: tuple[FieldSpec, ...], env: dict[str, Any], objects: bool, indent: str
) -> list[str]:
    """Every field of ``specs``, in catalog order, checked from ``record`` into ``out``
    when the producer sent it (not None). Record objects of the catalog's schema need no
    type checks: the schema fixes each field's type (strings read as UTF-8 bytes are
    decoded here, every one: one that is not UTF-8 raises)."""
    lines = []
    for fs in specs:
        lines.append(f"{indent}v = {_get('record', fs.name, objects)}")
        lines.append(f"{indent}if v is not None:")
        if not objects:
            lines.append(f"{indent}    if type(v) is not {_TYPES[fs.kind]}: raise _Decline")
        lines += [f"{indent}    {rule}" for rule in _rules(fs, env, objects)]
        lines.append(f"{indent}    out[{fs.name!r}] = v")
        if fs.required:
            lines.append(f"{indent}else: raise _Decline")
    return lines


def _build(lines: list[str], env: dict[str, Any], label: str, name: str) -> Any:
    code = compile("\n".join(lines), f"<fused {label}>", "exec")
    exec(code, env)  # source generated above from the catalog alone, nothing else
    return env[name]


def _compile_content(specs: tuple[FieldSpec, ...], label: str, objects: bool) -> Content:
    """``content(record, out)`` for an item record: straight-line code from the catalog
    (a loop over the fields cost three times as much: 25 fields, ~6 µs)."""
    env: dict[str, Any] = {"_Decline": _Decline, "_map": map, "_decode": bytes.decode}
    lines = ["def content(record, out):", *_content_lines(specs, env, objects, "    ")]
    lines.append("    return out")
    content: Content = _build(lines, env, f"content of {label}", "content")
    return content


def _decoded_envelope(objects: bool) -> list[str]:
    """Record objects' envelope strings, read as UTF-8 bytes, decoded."""
    if not objects:
        return []
    return [
        "session = session.decode()",
        "if app_key is not None: app_key = app_key.decode()",
        "if event_id is not None: event_id = event_id.decode()",
    ]


def _identity_lines(objects: bool) -> list[str]:
    """``identity``: the attributes given, empty ones left out (as
    mapping.identifiable_attributes does); any value not a str is not sure."""
    lines = []
    if not objects:  # a record object of the reader schema has exactly these fields
        lines.append(f"if type(a) is not dict or len(a) != {len(_ATTRIBUTES)}: raise _Decline")
    lines.append("identity = {}")
    for name in _ATTRIBUTES:
        lines.append(f"v = {_get('a', name, objects)}")
        if not objects:  # a record object's are None or str
            lines += ["if v is not None and type(v) is not str: raise _Decline"]
        value = "v.decode()" if objects else "v"  # b'' is as false as ''
        lines.append(f"if v: identity[{name!r}] = {value}")
    return lines


def _mapper_env() -> dict[str, Any]:
    return {
        "_Decline": _Decline,
        "_MappedSignal": MappedSignal,
        "_datetime": datetime,
        "_UTC": UTC,
        "_EARLIEST": EARLIEST_EVENT_TIME,
        "_LATEST": LATEST_EVENT_TIME,
        "_format_timestamp": format_timestamp,
        "_format_millis": format_millis,
        "_plain": is_plain_key,
        "_idempotency_key": idempotency_key,
        "_default_effect": default_effect,
        "_map": map,
        "_decode": bytes.decode,
    }


def _mapper_body(signal_type: str, objects: bool, env: dict[str, Any]) -> list[str]:
    """The mapper's statements (not indented): ``record`` and ``options`` to a
    ``return`` of the signal or of None."""
    spec = catalog.SIGNALS[signal_type]
    missing = "(_Decline, AttributeError)" if objects else "(_Decline, KeyError)"
    body = []
    if not objects:  # unknown or missing keys: the strict path names them
        body.append(f"if len(record) != {_ENVELOPE_SIZE + len(spec.fields)}: return None")
    body += [
        "try:",
        f"    session = {_get('record', 'sessionId', objects)}",
        f"    moment = {_get('record', 'eventTime', objects)}",
        f"    app_key = {_get('record', 'appKey', objects)}",
        f"    event_id = {_get('record', 'eventId', objects)}",
        f"    a = {_get('record', 'identifiableAttributes', objects)}",
        *(f"    {line}" for line in _decoded_envelope(objects)),
        *(f"    {line}" for line in _identity_lines(objects)),
        f"    out = {{'signalType': {signal_type!r}}}",
        *_content_lines(spec.fields, env, objects, "    "),
        f"except {missing}:",
        "    return None",
    ]
    if objects:  # the schema's types: a string, a long, two optional strings
        body += [
            "if not session: return None",
            f"if not {EARLIEST_MS} <= moment < {LATEST_MS}: return None",
        ]
    else:
        body += [
            "if type(session) is not str or not session: return None",
            "if type(moment) is not _datetime or moment.tzinfo is not _UTC"
            " or not _EARLIEST <= moment < _LATEST:",
            "    return None",
            "if app_key is not None and type(app_key) is not str: return None",
            "if event_id is not None and type(event_id) is not str: return None",
        ]
    body += [
        "if not app_key:",
        "    app_key = options.default_app_key",
        "    if not app_key: return None",
        "if not identity and not options.allow_anonymous: return None",
        f"if 'category' not in out: out['category'] = {DEFAULT_CATEGORY!r}",
    ]
    if signal_type == "onSiteSearch":  # see mapping.default_effect
        body += [
            "if 'effect' not in out:",
            f"    effect = _default_effect({signal_type!r}, out)",
            "    if effect is not None: out['effect'] = effect",
        ]
    elif spec.suggested_effect is not None:
        body.append(f"if 'effect' not in out: out['effect'] = {spec.suggested_effect!r}")
    stamp = "_format_millis(moment)" if objects else "_format_timestamp(moment)"
    body += [
        f"out['signalTimestamp'] = {stamp}",
        "signal = {'appKey': app_key, 'identifiableAttributes': identity,"
        " 'sessionId': session, 'signalContent': out}",
        "if event_id and _plain(event_id): key = event_id",
        "else: key = _idempotency_key(event_id, signal)",
        f"return _MappedSignal({signal_type!r}, key, signal)",
    ]
    return body


@cache
def record_mapper(signal_type: str, *, objects: bool = False) -> Mapper:
    """The type's mapper: ``mapper(record, options)`` -> the signal ``validate_event``
    then ``map_event`` would make, or None (not sure; the strict path decides).

    ``objects``: the record is a record object of the catalog's own current-edition
    schema (the codec's lane makes sure of that): fields as attributes, exactly the
    schema's, each of the schema's type, but strings as their UTF-8 bytes (decoded
    here: one that is not UTF-8 raises UnicodeDecodeError) and eventTime as epoch
    milliseconds (an int, kept one until the signal's text). Otherwise a dict as
    fastavro reads it (eventTime an aware UTC datetime), whose keys and value types
    are checked.
    """
    env = _mapper_env()
    body = _mapper_body(signal_type, objects, env)
    lines = ["def mapper(record, options):", *(f"    {line}" for line in body)]
    shape = "record objects" if objects else "dicts"
    label = f"mapper of {catalog.SIGNALS[signal_type].record_name} ({shape})"
    mapper: Mapper = _build(lines, env, label, "mapper")
    return mapper


#: ``lane(value, start)``: a body to its signal, or None (not sure; see ``object_lane``).
ObjectLane = Callable[[bytes, int], "MappedSignal | None"]


def object_lane(
    signal_type: str, options: MappingOptions, read: tuple[str, ...], names: dict[str, Any]
) -> ObjectLane:
    """``record_mapper(signal_type, objects=True)`` with ``options``, after ``read``, in
    one generated function ``lane(value, start)``: the codec's statements that leave a
    record object in ``record`` (or return None), then the mapper's. One Python frame a
    record instead of three. Any exception, in reading or mapping, returns None (not
    sure: the regular path decides and explains). ``names``: what ``read`` refers to."""
    env = {**_mapper_env(), **names, "options": options}
    body = [*read, *_mapper_body(signal_type, True, env)]
    lines = [
        "def lane(value, start):",
        "    try:",
        *(f"        {line}" for line in body),
        "    except Exception:",
        "        return None",
    ]
    label = f"lane of {catalog.SIGNALS[signal_type].record_name}"
    lane: ObjectLane = _build(lines, env, label, "lane")
    return lane


def map_avro_record(
    signal_type: str, record: dict[str, Any], options: MappingOptions
) -> MappedSignal | None:
    """The signal ``validate_event`` then ``map_event`` would make, or None: not sure.

    ``record`` is what fastavro returns for the type's current-edition reader schema
    (eventTime an aware UTC datetime). None also for every record the strict path
    rejects: it explains why.
    """
    mapper = _DICT_MAPPERS.get(signal_type)
    if mapper is None:
        mapper = _DICT_MAPPERS[signal_type] = record_mapper(signal_type)
    return mapper(record, options)


_DICT_MAPPERS: dict[str, Mapper] = {}
