"""The simulator's own signal rules, written from the specification's current edition.

Deliberately independent of the pipeline's catalog (nothing is imported from
``pipeline``): each side checks the other, so a mistake in one is caught by the
other. Pure functions: a value or a signal in, the broken rules out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import pycountry

CURRENCIES: Final = frozenset(c.alpha_3 for c in pycountry.currencies)

# Required fields per signal type: the "Required fields" lists of the current edition.
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "addToCart": ("currency", "itemQuantity", "productId", "productName", "unitPrice"),
    "browseAbandonment": ("currency",),
    "cartAbandonment": ("abandonedCartValue", "currency"),
    "error": ("errorText", "errorType"),
    "identification": ("identifierName", "identifierValue"),
    "onSiteSearch": ("numberOfResults", "searchTerm"),
    "order": ("currency", "orderId"),
    "pageView": ("url",),
    "productConfiguration": ("currency", "productId", "productName"),
    "productView": ("productId", "productName"),
    "richMediaInteraction": ("mediaId",),
}
# Item objects: "Ordered items object" and "Abandoned items object" mark productId,
# productName and unitPrice required; cartAbandonment's item list marks nothing, so
# this simulator requires nothing there (the spec's letter).
ITEM_REQUIRED: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("order", "orderedItems"): ("productId", "productName", "unitPrice"),
    ("browseAbandonment", "abandonedItems"): ("productId", "productName", "unitPrice"),
}

# Enumerations, in every spelling the specification shows (tables write lower case,
# the current examples send USER and LAUNCH).
ENUMS: Final[dict[str, frozenset[str]]] = {
    "effect": frozenset({"negative", "positive"}),
    "category": frozenset({"Behavior"}),
    "errorType": frozenset({"application", "user", "APPLICATION", "USER"}),
    "interactionType": frozenset(
        v
        for base in ("load", "launch", "pause", "continue", "complete", "stop", "enlarge")
        for v in (base, base.upper())
    ),
    "abandonmentReason": frozenset(
        {
            "APPLICATION_ERROR",
            "LARGEST_CONTENTFUL_PAINT",
            "CUMULATIVE_LAYOUT_SHIFT",
            "FIRST_INPUT_DELAY",
            "RAGE_CLICK",
            "USER_ERRORS",
            "EXCESSIVE_SCROLLING",
        }
    ),
    "identifierName": frozenset({"email", "sms", "contactKey"}),
}
NAME_MAX: Final = 256
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})", re.ASCII
)
_DATE_ADDED = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}", re.ASCII)

Problem = tuple[str, str]  # (field path, rule)
ValueRule = Callable[[str], str | None]  # a string value -> the broken rule, or None


def _timestamp_ok(value: str) -> bool:
    if not _TIMESTAMP.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))  # a real date and time
    except ValueError:
        return False
    return True


def _date_added_ok(value: str) -> bool:
    if not _DATE_ADDED.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _enum_rule(key: str, allowed: frozenset[str]) -> ValueRule:
    return lambda v: None if v in allowed else f"{v!r} is not a valid {key}"


#: The rules on string values, by field name, in signalContent and in items alike.
VALUE_RULES: Final[dict[str, ValueRule]] = {
    **{key: _enum_rule(key, allowed) for key, allowed in ENUMS.items()},
    "currency": lambda v: None if v in CURRENCIES else f"{v!r} is not an ISO 4217 code",
    "name": lambda v: None if len(v) <= NAME_MAX else f"longer than {NAME_MAX} characters",
    "signalTimestamp": lambda v: (
        None if _timestamp_ok(v) else f"{v!r} is not an ISO 8601 date-time"
    ),
    "dateAdded": lambda v: (
        None if _date_added_ok(v) else f"{v!r} does not match yyyy-MM-dd HH:mm:ss.SSS"
    ),
}
ITEM_LISTS: Final = ("orderedItems", "abandonedItems")


def _missing(value: Any) -> bool:
    return value is None or value == ""


def _check_items(signal_type: str, key: str, items: Any, problems: list[Problem]) -> None:
    if not isinstance(items, list):
        return  # a single object is a list of one (GraphQL); its type is the SDL's job
    required = ITEM_REQUIRED.get((signal_type, key), ())
    for i, item in enumerate(items):
        if isinstance(item, dict):  # null items are allowed by [ItemInput]
            for name in required:
                if _missing(item.get(name)):
                    problems.append((f"signalContent.{key}[{i}].{name}", "required"))


def signal_problems(signal: dict[str, Any], app_keys: frozenset[str]) -> list[Problem]:
    """The signal-level rules one signal breaks: appKey, identity, type, required fields.

    The per-value rules (VALUE_RULES) are applied field by field by the same pass that
    checks the SDL's types (connect_sim.shape), so each value is visited once; wrong
    types are that pass's to report, so they are skipped here.
    """
    problems: list[Problem] = []
    app_key = signal.get("appKey")
    if _missing(app_key):
        problems.append(("appKey", "required"))
    elif isinstance(app_key, str) and app_key not in app_keys:
        problems.append(("appKey", "unknown appKey"))
    identity = signal.get("identifiableAttributes")
    if not isinstance(identity, dict) or not any(
        isinstance(v, str) and v for v in identity.values()
    ):
        problems.append(("identifiableAttributes", "at least one identifiable attribute"))
    content = signal.get("signalContent")
    if not isinstance(content, dict):
        return problems
    signal_type = content.get("signalType")
    if not isinstance(signal_type, str):
        return problems
    if signal_type not in REQUIRED:
        return [*problems, ("signalContent.signalType", f"unknown signalType {signal_type!r}")]
    for key in REQUIRED[signal_type]:
        if _missing(content.get(key)):
            problems.append((f"signalContent.{key}", "required"))
    for key in ITEM_LISTS:
        if key in content:
            _check_items(signal_type, key, content[key], problems)
    return problems
