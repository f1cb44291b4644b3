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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pipeline import catalog
from pipeline.catalog import FieldSpec, ItemSpec, Kind
from pipeline.outcomes import Reason, Rejection
from pipeline.validation import GRAPHQL_INT_MAX, ValidEvent

DEFAULT_CATEGORY: Final = catalog.CATEGORIES[0]
# Keys travel as RFC 8941 sf-strings in a header: printable ASCII without `"` or `\`.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9._:~+/=-]{1,128}")


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """What the mapping needs from configuration."""

    default_app_key: str | None = None
    #: Send signals with empty identifiableAttributes instead of rejecting them.
    allow_anonymous: bool = False


@dataclass(frozen=True, slots=True)
class MappedSignal:
    """One createSignals input object and the key that makes its delivery idempotent."""

    signal_type: str
    idempotency_key: str
    signal: dict[str, Any]


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds: ``2025-08-31T08:29:30.001Z``.

    Validation keeps event times within 1970..2100, so the year has four digits.
    """
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def default_effect(signal_type: str, content: dict[str, Any]) -> str | None:
    """The effect the specification suggests when the producer sends none."""
    if signal_type == "onSiteSearch":
        # "Send positive if search returns results, negative if no results."
        return "positive" if content.get("numberOfResults", 0) > 0 else "negative"
    return catalog.SIGNALS[signal_type].suggested_effect


def _item(item: dict[str, Any], spec: ItemSpec) -> dict[str, Any]:
    return {fs.name: item[fs.name] for fs in spec.fields if item.get(fs.name) is not None}


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
        items = [_item(i, fs.items) for i in value]
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


def signal_content(event: ValidEvent) -> dict[str, Any]:
    """The signalContent object: the event's fields plus the catalog's defaults."""
    fields = event.fields
    reshaped = _RESHAPED[event.signal_type]
    # Validation returns only the fields the producer sent (no None values).
    content = {"signalType": event.signal_type}
    content.update({k: v for k, v in fields.items() if k not in _ENVELOPE_KEYS})
    for name, fs in reshaped.items():
        if name in content:
            content[name] = _value(fs, content[name])
    content.setdefault("category", DEFAULT_CATEGORY)
    if "effect" not in content:
        effect = default_effect(event.signal_type, content)
        if effect is not None:
            content["effect"] = effect
    content["signalTimestamp"] = format_timestamp(fields["eventTime"])
    return content


def identifiable_attributes(fields: dict[str, Any]) -> dict[str, str]:
    given = fields.get("identifiableAttributes") or {}
    return {k: given[k] for k in catalog.IDENTIFIABLE_ATTRIBUTES if given.get(k)}


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
