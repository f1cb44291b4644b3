"""The simulator's own signal rules, written from the specification's current edition.

Deliberately independent of the pipeline's catalog (nothing is imported from
``pipeline``): each side checks the other, so a mistake in one is caught by the
other. Pure functions: a signal in, a list of (field, rule) problems out.
"""

from __future__ import annotations

import re
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


def _timestamp_ok(value: str) -> bool:
    if not _TIMESTAMP.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _date_added_ok(value: str) -> bool:
    if not _DATE_ADDED.fullmatch(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return False
    return True


def _value_problems(path: str, key: str, value: Any) -> list[Problem]:
    if not isinstance(value, str):
        return []  # types are the GraphQL layer's job
    if key in ENUMS and value not in ENUMS[key]:
        return [(path, f"{value!r} is not a valid {key}")]
    if key == "currency" and value not in CURRENCIES:
        return [(path, f"{value!r} is not an ISO 4217 code")]
    if key == "name" and len(value) > NAME_MAX:
        return [(path, f"longer than {NAME_MAX} characters")]
    if key == "signalTimestamp" and not _timestamp_ok(value):
        return [(path, f"{value!r} is not an ISO 8601 date-time")]
    if key == "dateAdded" and not _date_added_ok(value):
        return [(path, f"{value!r} does not match yyyy-MM-dd HH:mm:ss.SSS")]
    return []


def _missing(value: Any) -> bool:
    return value is None or value == ""


def signal_problems(signal: dict[str, Any], app_keys: frozenset[str]) -> list[Problem]:
    """Every rule one signal breaks; [] when Connect would accept it."""
    problems: list[Problem] = []
    app_key = signal.get("appKey")
    if _missing(app_key):
        problems.append(("appKey", "required"))
    elif app_key not in app_keys:
        problems.append(("appKey", "unknown appKey"))
    identity = signal.get("identifiableAttributes") or {}
    if not any(isinstance(v, str) and v for v in identity.values()):
        problems.append(("identifiableAttributes", "at least one identifiable attribute"))
    content = signal.get("signalContent")
    if not isinstance(content, dict):
        return [*problems, ("signalContent", "required")]
    signal_type = content.get("signalType")
    if signal_type not in REQUIRED:
        return [*problems, ("signalContent.signalType", f"unknown signalType {signal_type!r}")]
    for key in REQUIRED[signal_type]:
        if _missing(content.get(key)):
            problems.append((f"signalContent.{key}", "required"))
    for key, value in content.items():
        problems.extend(_value_problems(f"signalContent.{key}", key, value))
        if key in ("orderedItems", "abandonedItems") and isinstance(value, list):
            required = ITEM_REQUIRED.get((signal_type, key), ())
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    problems.append((f"signalContent.{key}[{i}]", "must be an object"))
                    continue
                for field in required:
                    if _missing(item.get(field)):
                        problems.append((f"signalContent.{key}[{i}].{field}", "required"))
                for item_key, item_value in item.items():
                    path = f"signalContent.{key}[{i}].{item_key}"
                    problems.extend(_value_problems(path, item_key, item_value))
    return problems
