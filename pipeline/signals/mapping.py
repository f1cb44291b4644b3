"""Mapping of a validated event to one ``createSignals`` signal.

Pure reshaping: validation has already canonicalised values. The output has exactly
the shape of the specification's examples::

    {"appKey": ..., "identifiableAttributes": {...}, "sessionId": ...,
     "signalContent": {"signalType": ..., "category": "Behavior", ...}}
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pipeline.signals import catalog
from pipeline.signals.catalog import FieldSpec, Kind
from pipeline.signals.outcomes import Reason, Rejection
from pipeline.signals.validation import GRAPHQL_INT_MAX, ValidEvent

DEFAULT_CATEGORY: Final = catalog.CATEGORIES[0]
# Keys travel as RFC 8941 sf-strings in a header: printable ASCII without `"` or `\`.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9._:~+/=-]{1,128}")
#: Whether an event id is its own idempotency key (a match) or is hashed (None).
is_plain_key: Final = _PLAIN_KEY.fullmatch


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """What the mapping needs from configuration."""

    default_app_key: str | None = None
    #: Send signals with empty identifiableAttributes instead of rejecting them.
    allow_anonymous: bool = False


# Not frozen: one per event, and a frozen dataclass's __init__ costs three times as
# much (object.__setattr__ per field). Nothing mutates it.
@dataclass(slots=True)
class MappedSignal:
    """One createSignals input object and the key that makes its delivery idempotent."""

    signal_type: str
    idempotency_key: str
    signal: dict[str, Any]


#: "YYYY-MM-DDTHH:" by epoch hour: a plain dict (a hit costs half an lru_cache's),
#: emptied when full.
_HOURS: dict[int, str] = {}
_HOURS_KEPT: Final = 4096


def _utc_hour(epoch_hour: int) -> str:
    if len(_HOURS) >= _HOURS_KEPT:
        _HOURS.clear()
    # time's own strftime: under half the cost of a datetime's
    text = _HOURS[epoch_hour] = time.strftime("%Y-%m-%dT%H:", time.gmtime(epoch_hour * 3600))
    return text


#: "MM:SS" of each second of an hour, and ".mmmZ" of each millisecond of a second.
_MINUTES_SECONDS: Final = tuple(f"{m:02d}:{s:02d}" for m in range(60) for s in range(60))
_MILLISECONDS: Final = tuple(f".{ms:03d}Z" for ms in range(1000))


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds: ``2025-08-31T08:29:30.001Z``.

    Validation keeps event times within 1970..2100, so the year has four digits.
    The text of each hour is cached and the rest comes from tables: formatting a
    datetime costs more than the rest of the mapping together. (A cache per second
    missed on about one event in five of a backlog: partitions read at different
    event times each bring their own seconds, and every second was formatted again
    per partition.)
    """
    # timestamp() of an aware datetime is exact to well under a microsecond until
    # 2100 (a double near 4e9 is precise to 5e-7), so int() floors to its second.
    hour, second = divmod(int(moment.timestamp()), 3600)
    text = _HOURS.get(hour) or _utc_hour(hour)
    return text + _MINUTES_SECONDS[second] + _MILLISECONDS[moment.microsecond // 1000]


def format_millis(epoch_ms: int) -> str:
    """``format_timestamp`` of the moment ``epoch_ms`` milliseconds after the epoch
    (not before it: validation keeps event times from 1970 on)."""
    second, ms = divmod(epoch_ms, 1000)
    hour, second = divmod(second, 3600)
    return (_HOURS.get(hour) or _utc_hour(hour)) + _MINUTES_SECONDS[second] + _MILLISECONDS[ms]


def default_effect(signal_type: str, content: dict[str, Any]) -> str | None:
    """The effect the specification suggests when the producer sends none."""
    if signal_type == "onSiteSearch":
        # "Send positive if search returns results, negative if no results."
        return "positive" if content.get("numberOfResults", 0) > 0 else "negative"
    return catalog.SIGNALS[signal_type].suggested_effect


def _item(item: dict[str, Any]) -> dict[str, Any]:
    # validation returns the item's fields in catalog order, absent ones as None
    return {k: v for k, v in item.items() if v is not None}


def merge_repeated_products(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ "Three identical items would result in one object, with a quantity of 3."

    Items are the same product when productId, unitPrice, discount and currency
    agree; lines of one product at different prices stay apart, since merging them
    would lose a price. A line without itemQuantity counts as one unit. A sum that
    would not fit a GraphQL Int starts a new line instead.
    """
    lines: list[dict[str, Any]] = []
    open_line: dict[tuple[Any, ...], int] = {}  # key -> index of the line that grows
    for item in items:
        key = (item["productId"], item["unitPrice"], item.get("discount"), item.get("currency"))
        at = open_line.get(key)
        if at is not None:
            first = lines[at]
            quantity = first.get("itemQuantity", 1) + item.get("itemQuantity", 1)
            if quantity <= GRAPHQL_INT_MAX:
                lines[at] = {**first, "itemQuantity": quantity}
                continue
        open_line[key] = len(lines)
        lines.append(item)
    return lines


def _value(fs: FieldSpec, value: Any) -> Any:
    if fs.kind is Kind.ITEMS:
        assert fs.items is not None
        items = [_item(i) for i in value]
        return merge_repeated_products(items) if fs.items.merge_repeated_products else items
    return value


#: Per type, the fields whose values need more than a copy (item lists).
_RESHAPED: Final = {
    t: {fs.name: fs for fs in spec.fields if fs.kind is Kind.ITEMS}
    for t, spec in catalog.SIGNALS.items()
}
_ENVELOPE_KEYS: Final = frozenset(
    {"eventId", "sessionId", "identifiableAttributes", "appKey", "eventTime", "signalType"}
)
#: The suggested effect of each type whose default does not depend on the content.
_FIXED_EFFECT: Final = {
    t: spec.suggested_effect for t, spec in catalog.SIGNALS.items() if t != "onSiteSearch"
}


def signal_content(event: ValidEvent) -> dict[str, Any]:
    """The signalContent object: the event's fields plus the catalog's defaults."""
    fields = event.fields
    signal_type = event.signal_type
    content = {"signalType": signal_type}
    # A loop: a third cheaper than update() with a comprehension (a second dict).
    for k, v in fields.items():
        if v is not None and k not in _ENVELOPE_KEYS:  # None: the producer did not send it
            content[k] = v
    reshaped = _RESHAPED[signal_type]
    if reshaped:
        for name, fs in reshaped.items():
            if name in content:
                content[name] = _value(fs, content[name])
    if "category" not in content:
        content["category"] = DEFAULT_CATEGORY
    if "effect" not in content:
        fixed = signal_type in _FIXED_EFFECT
        effect = _FIXED_EFFECT[signal_type] if fixed else default_effect(signal_type, content)
        if effect is not None:
            content["effect"] = effect
    content["signalTimestamp"] = format_timestamp(fields["eventTime"])
    return content


def identifiable_attributes(fields: dict[str, Any]) -> dict[str, str]:
    """The attributes given, without empty ones (validation allows only the catalog's
    IDENTIFIABLE_ATTRIBUTES, in that order)."""
    given = fields.get("identifiableAttributes")
    return {k: v for k, v in given.items() if v} if given else {}


def idempotency_key(event_id: str | None, signal: dict[str, Any]) -> str:
    """Deterministic per event: the event id, or a hash of the canonical signal.

    Ids that are not plain printable ASCII are hashed, so the key can always travel
    in a header. Without an event id, the signal itself (content, identity, session,
    appKey, timestamp) is the identity.
    """
    if event_id:
        if _PLAIN_KEY.fullmatch(event_id):
            return event_id
        return "h-" + hashlib.sha256(event_id.encode()).hexdigest()[:40]
    canonical = json.dumps(signal, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "c-" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


def map_event(event: ValidEvent, options: MappingOptions) -> MappedSignal | Rejection:
    """One valid event to one createSignals signal, or why it cannot be one."""
    fields = event.fields
    app_key = fields.get("appKey") or options.default_app_key
    if not app_key:
        return Rejection.single(
            Reason.VALIDATION,
            "appKey",
            "required: the event has no appKey and no default appKey is configured",
        )
    identity = identifiable_attributes(fields)
    if not identity and not options.allow_anonymous:
        names = ", ".join(catalog.IDENTIFIABLE_ATTRIBUTES)
        return Rejection.single(
            Reason.VALIDATION,
            "identifiableAttributes",
            f"at least one of {names} is required (anonymous signals are not enabled)",
        )
    signal = {
        "appKey": app_key,
        "identifiableAttributes": identity,
        "sessionId": fields["sessionId"],
        "signalContent": signal_content(event),
    }
    key = idempotency_key(fields.get("eventId"), signal)
    return MappedSignal(event.signal_type, key, signal)
