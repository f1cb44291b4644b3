"""The signal catalog: the one declarative description of every signal type.

Written from the vendor's specification (``shared/spec``, current and earlier
edition). Everything else that describes a signal is derived from here: the Avro
schemas in ``avro/``, the pydantic validation models, the mapping's defaults and
normalisations, the README tables. A new field in the vendor's format is one edit
below.

Each contradiction in the specification is decided once, here, in a comment
marked ``DECISION``; the README lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


class Kind(StrEnum):
    """The value type of a field, as the specification's tables name it."""

    STRING = "string"
    NUMBER = "number"  # "Number": a finite decimal, sent as a GraphQL Float
    INTEGER = "integer"  # "Number (integer)" / "Integer"
    BOOLEAN = "boolean"
    STRING_LIST = "string_list"  # "Array of strings"
    ITEMS = "items"  # an array of item objects (orderedItems, abandonedItems)
    CUSTOM_ATTRIBUTES = "custom_attributes"  # [{name, value}] string pairs


class Format(StrEnum):
    """A rule on a string's content beyond its type."""

    CURRENCY = "ISO 4217 currency code"
    DATE_ADDED = "yyyy-MM-dd HH:mm:ss.SSS"


class Tier(StrEnum):
    """The lowest Connect subscription that includes a signal type."""

    PRO = "Pro"
    PREMIUM = "Premium"
    ULTIMATE = "Ultimate"


#: Which signal types each subscription includes (current edition, "Signal types and
#: subscription availability"): Pro has the PRO types; Premium and Ultimate have all.
TIER_RANK: Final[dict[Tier, int]] = {Tier.PRO: 0, Tier.PREMIUM: 1, Tier.ULTIMATE: 2}


class V1(StrEnum):
    """How a field appeared in the earlier edition of the specification."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    ABSENT = "absent"


NAME_MAX_LENGTH: Final = 256

EFFECTS: Final = ("positive", "negative")
CATEGORIES: Final = ("Behavior",)
# DECISION (enumeration case): the tables write `application`/`user` and
# `load`/`launch`/..., the current edition's examples send `USER` and `LAUNCH`, and
# abandonmentReason is upper case everywhere. Input is accepted in any case; the
# pipeline sends one canonical spelling per value: the one the current edition's
# examples send (upper case for errorType, interactionType and abandonmentReason),
# since those payloads are the vendor's most recent word on what the API receives.
ERROR_TYPES: Final = ("APPLICATION", "USER")
INTERACTION_TYPES: Final = ("LOAD", "LAUNCH", "PAUSE", "CONTINUE", "COMPLETE", "STOP", "ENLARGE")
ABANDONMENT_REASONS: Final = (
    "APPLICATION_ERROR",
    "LARGEST_CONTENTFUL_PAINT",
    "CUMULATIVE_LAYOUT_SHIFT",
    "FIRST_INPUT_DELAY",
    "RAGE_CLICK",
    "USER_ERRORS",
    "EXCESSIVE_SCROLLING",
)
# identifierName keeps the tables' spelling (camel case contactKey), the same in both
# editions and matching the identifiableAttributes keys.
IDENTIFIER_NAMES: Final = ("email", "sms", "contactKey")

#: The identifiableAttributes every clickstream envelope may carry (spec examples).
IDENTIFIABLE_ATTRIBUTES: Final = ("contactKey", "email", "sms", "whatsapp")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a signal's content or of an item object."""

    name: str
    kind: Kind
    required: bool = False
    enum: tuple[str, ...] | None = None
    max_length: int | None = None
    format: Format | None = None
    minimum: int | None = None  # integers only
    items: ItemSpec | None = None  # Kind.ITEMS only
    v1: V1 = V1.ABSENT
    #: The field's name in the earlier edition when it differs (an Avro alias).
    v1_name: str | None = None
    doc: str = ""


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """An item object inside an array field (ordered or abandoned products)."""

    record_name: str
    fields: tuple[FieldSpec, ...]
    #: Merge items that repeat a product into one with the summed quantity.
    merge_repeated_products: bool = False


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One signal type: its fields, its subscription tier and its suggested effect."""

    signal_type: str
    tier: Tier
    fields: tuple[FieldSpec, ...]
    #: The effect the spec suggests when the producer sends none (None: no suggestion,
    #: leave it to Connect). onSiteSearch is special-cased in ``SEARCH_EFFECT_RULE``.
    suggested_effect: str | None
    in_v1: bool = True
    doc: str = ""
    by_name: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})

    @property
    def record_name(self) -> str:
        """The Avro record name, e.g. ``AddToCartEvent``."""
        return self.signal_type[0].upper() + self.signal_type[1:] + "Event"

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required)


# --- building blocks -------------------------------------------------------------

S, N, INT, B, SL = Kind.STRING, Kind.NUMBER, Kind.INTEGER, Kind.BOOLEAN, Kind.STRING_LIST
REQ, OPT, ABS = V1.REQUIRED, V1.OPTIONAL, V1.ABSENT


def f(
    name: str,
    kind: Kind = Kind.STRING,
    *,
    required: bool = False,
    v1: V1 = V1.ABSENT,
    **rules: object,
) -> FieldSpec:
    """Shorthand for one catalog row."""
    return FieldSpec(name, kind, required, v1=v1, **rules)  # type: ignore[arg-type]


def currency(*, required: bool = True, v1: V1 = V1.ABSENT) -> FieldSpec:
    return f("currency", S, required=required, v1=v1, format=Format.CURRENCY)


def common_fields(*, v1: bool, custom_attributes: bool = True) -> tuple[FieldSpec, ...]:
    """category, name, effect, description, signalCustomAttributes.

    The current edition makes category, name and effect optional for every type;
    the earlier edition required them. description is current-edition only.
    """
    head = V1.REQUIRED if v1 else V1.ABSENT
    rows = [
        f("category", S, v1=head, enum=CATEGORIES),
        f("name", S, v1=head, max_length=NAME_MAX_LENGTH),
        # DECISION (effect on the abandonment types): browseAbandonment's example sends
        # `effect` although its optional-field list omits it, and cartAbandonment lists
        # neither. Every other type accepts effect, so the catalog accepts it on all
        # types: a producer's explicit effect is never lost.
        f("effect", S, v1=head, enum=EFFECTS),
        f("description", S),
    ]
    if custom_attributes:
        rows.append(
            f(
                "signalCustomAttributes",
                Kind.CUSTOM_ATTRIBUTES,
                v1=V1.OPTIONAL if v1 else V1.ABSENT,
            )
        )
    return tuple(rows)


def product_fields(v1_of: dict[str, V1]) -> tuple[FieldSpec, ...]:
    """Optional product description fields shared by product-centred types."""
    return (
        f("discount", N, v1=v1_of.get("discount", ABS)),
        f("imageUrls", SL, v1=v1_of.get("imageUrls", ABS)),
        f("productCategory", S, v1=v1_of.get("productCategory", ABS)),
        f("productCategoryId", S, v1=v1_of.get("productCategoryId", ABS)),
        f("productDescription", S, v1=v1_of.get("productDescription", ABS)),
        f("productUrls", SL, v1=v1_of.get("productUrls", ABS)),
        f("promotionId", S, v1=v1_of.get("promotionId", ABS)),
        f("shoppingCartUrl", S, v1=v1_of.get("shoppingCartUrl", ABS)),
        f("virtualCategory", S, v1=v1_of.get("virtualCategory", ABS)),
    )


ALL_OPT = dict.fromkeys(
    (
        "discount",
        "imageUrls",
        "productCategory",
        "productDescription",
        "productUrls",
        "promotionId",
        "shoppingCartUrl",
        "virtualCategory",
    ),
    OPT,
)

# --- item objects --------------------------------------------------------------

# DECISION (order item currency): the current edition's order example puts `currency`
# in each ordered item though its item table does not list it; the earlier edition's
# table lists it as optional. It is accepted (validated as ISO 4217) and passed on.
# DECISION (itemQuantity integer): the earlier edition calls it `quantity` (Integer);
# the current one `itemQuantity` (Number). Quantities are counts: integer, at least 1.
ORDERED_ITEM = ItemSpec(
    record_name="OrderedItem",
    merge_repeated_products=True,
    fields=(
        f("productId", S, required=True, v1=REQ),
        f("productName", S, required=True, v1=REQ),
        f("unitPrice", N, required=True, v1=REQ),
        FieldSpec("itemQuantity", INT, minimum=1, v1=OPT, v1_name="quantity"),
        currency(required=False, v1=OPT),
        *product_fields(ALL_OPT),
    ),
)

# DECISION (abandoned items): browseAbandonment's item table requires productId,
# productName and unitPrice; cartAbandonment's item list carries no required marks.
# One item object serves both, with those three required (an abandoned item without
# an id, a name and a price identifies nothing a marketer can act on), and with the
# union of both lists' fields (browse items add inventoryQuantity, cart items add
# productCategoryId).
ABANDONED_ITEM = ItemSpec(
    record_name="AbandonedItem",
    fields=(
        f("productId", S, required=True),
        f("productName", S, required=True),
        f("unitPrice", N, required=True),
        f("itemQuantity", INT, minimum=1),
        f("inventoryQuantity", INT, minimum=0),
        *product_fields({}),
    ),
)

ABANDONMENT_FIELDS: Final = (
    currency(),
    f("abandonmentReason", S, enum=ABANDONMENT_REASONS),
    f("abandonmentReasonDescription", S),
    f("abandonedItems", Kind.ITEMS, items=ABANDONED_ITEM),
)

# --- the eleven signal types ---------------------------------------------------------

SIGNALS: Final[dict[str, SignalSpec]] = {
    s.signal_type: s
    for s in (
        SignalSpec(
            "addToCart",
            Tier.PRO,
            suggested_effect="positive",
            doc="A visitor adds products to their cart.",
            fields=(
                *common_fields(v1=True),
                currency(v1=REQ),
                f("productId", S, required=True, v1=REQ),
                f("productName", S, required=True, v1=REQ),
                f("itemQuantity", INT, required=True, v1=REQ, minimum=1),
                f("unitPrice", N, required=True, v1=REQ),
                *product_fields(ALL_OPT),
            ),
        ),
        SignalSpec(
            "browseAbandonment",
            Tier.PREMIUM,
            # DECISION: the spec suggests no effect for abandonment; its example sends
            # `negative`, which is what abandonment means for engagement.
            suggested_effect="negative",
            in_v1=False,
            doc="Strong interest in a product without adding it to the cart.",
            fields=(
                *common_fields(v1=False, custom_attributes=False),
                *ABANDONMENT_FIELDS,
                f("promotionId", S),
                f("productCategoryId", S),
            ),
        ),
        SignalSpec(
            "cartAbandonment",
            Tier.PREMIUM,
            suggested_effect="negative",
            in_v1=False,
            doc="Add-to-cart in a session without an order before the session expires.",
            fields=(
                *common_fields(v1=False, custom_attributes=False),
                f("abandonedCartValue", N, required=True),
                *ABANDONMENT_FIELDS,
                f("shoppingCartUrl", S),
            ),
        ),
        SignalSpec(
            "error",
            Tier.PREMIUM,
            suggested_effect="negative",
            doc="A user meets an error on the site.",
            fields=(
                *common_fields(v1=True),
                f("errorText", S, required=True, v1=REQ),
                f("errorType", S, required=True, v1=REQ, enum=ERROR_TYPES),
                # Required in the earlier edition, optional now.
                f("errorIdentifier", S, v1=REQ),
            ),
        ),
        SignalSpec(
            "identification",
            Tier.PRO,
            suggested_effect=None,
            doc="A visitor's email or contact id captured while browsing.",
            fields=(
                *common_fields(v1=True, custom_attributes=False),
                f("identifierName", S, required=True, v1=REQ, enum=IDENTIFIER_NAMES),
                f("identifierValue", S, required=True, v1=REQ),
                f("identificationFromLogin", B, v1=OPT),
            ),
        ),
        SignalSpec(
            "onSiteSearch",
            Tier.PREMIUM,
            # positive iff numberOfResults > 0: see mapping.default_effect.
            suggested_effect="positive",
            doc="Search terms visitors use and the number of results they get.",
            fields=(
                *common_fields(v1=True),
                f("searchTerm", S, required=True, v1=REQ),
                f("numberOfResults", INT, required=True, v1=REQ, minimum=0),
            ),
        ),
        SignalSpec(
            "order",
            Tier.PRO,
            suggested_effect="positive",
            doc="A contact places an order.",
            fields=(
                *common_fields(v1=True),
                currency(v1=REQ),
                f("orderId", S, required=True, v1=REQ),
                f("orderDiscount", N, v1=OPT),
                f("orderShippingHandling", N, v1=OPT),
                f("orderSubtotal", N, v1=OPT),
                f("orderTax", N, v1=OPT),
                f("orderValue", N, v1=OPT),
                f("orderedItems", Kind.ITEMS, v1=OPT, items=ORDERED_ITEM),
            ),
        ),
        SignalSpec(
            "pageView",
            Tier.PREMIUM,
            suggested_effect=None,
            doc="Page views as users browse the site.",
            fields=(
                # The earlier edition's pageView has no signalCustomAttributes.
                *common_fields(v1=True, custom_attributes=False),
                f("signalCustomAttributes", Kind.CUSTOM_ATTRIBUTES),
                f("url", S, required=True, v1=REQ),
                f("pageCategory", S, v1=OPT),
                f("pageGroup", S),
            ),
        ),
        SignalSpec(
            "productConfiguration",
            Tier.PREMIUM,
            suggested_effect="positive",
            doc="Interactions on product pages (size selection, FAQs, reviews).",
            fields=(
                *common_fields(v1=True),
                # DECISION: currency was optional in the earlier edition and is required
                # now. Validation follows the current edition (what Connect accepts), so
                # an earlier-edition event without currency is dead-lettered with
                # `currency: required` rather than sent to be rejected.
                currency(v1=OPT),
                f("productId", S, required=True, v1=REQ),
                f("productName", S, required=True, v1=REQ),
                # Required in the earlier edition, optional now.
                f("configurationType", S, v1=REQ),
                f("inventoryQuantity", INT, v1=OPT, minimum=0),
                f("unitPrice", N),
                *product_fields({}),
            ),
        ),
        SignalSpec(
            "productView",
            Tier.PREMIUM,
            suggested_effect="positive",
            doc="Activity on product pages.",
            fields=(
                *common_fields(v1=True),
                f("productId", S, required=True, v1=REQ),
                f("productName", S, required=True, v1=REQ),
                # currency and unitPrice: required in the earlier edition, optional now.
                currency(required=False, v1=REQ),
                f("unitPrice", N, v1=REQ),
                f("availability", S, v1=OPT),
                f("brandDescription", S, v1=OPT),
                f("brandName", S, v1=OPT),
                # DECISION: `categories` is "String" in the table although the name is a
                # plural; it is a string, as the table says.
                f("categories", S),
                f("dateAdded", S, v1=OPT, format=Format.DATE_ADDED),
                f("inventoryQuantity", INT, v1=OPT, minimum=0),
                f("model", S, v1=OPT),
                # msrp "must be a decimal or float": a finite number (Avro double).
                f("msrp", N, v1=OPT),
                f("productRating", N, v1=OPT),
                f("productStatus", S, v1=OPT),
                f("sku", S, v1=OPT),
                f("tags", SL),
                *product_fields({**ALL_OPT}),
            ),
        ),
        SignalSpec(
            "richMediaInteraction",
            Tier.PREMIUM,
            suggested_effect="positive",
            doc="Interactions with video and audio content.",
            fields=(
                *common_fields(v1=True),
                f("mediaId", S, required=True, v1=REQ),
                f("interactionType", S, v1=OPT, enum=INTERACTION_TYPES),
                f("mediaCategory", S, v1=OPT),
                f("mediaName", S, v1=OPT),
                f("url", S, v1=OPT),
            ),
        ),
    )
}

SIGNAL_TYPES: Final = tuple(SIGNALS)

#: Avro record name -> signal type, e.g. ``OrderEvent`` -> ``order``.
BY_RECORD_NAME: Final = {spec.record_name: spec.signal_type for spec in SIGNALS.values()}

AVRO_NAMESPACE: Final = "connect.signals"


def types_in_tier(tier: Tier) -> frozenset[str]:
    """The signal types a subscription includes."""
    rank = TIER_RANK[tier]
    return frozenset(t for t, s in SIGNALS.items() if TIER_RANK[s.tier] <= rank)
