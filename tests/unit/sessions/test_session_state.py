"""What an open session holds: the item fields of its lines and views, not the events'
whole content (memory per open session), with the same changelog value as before."""

from __future__ import annotations

import orjson

from pipeline.sessions.changelog import Closed, decode, encode
from pipeline.sessions.derive import derived_records, to_signal
from pipeline.sessions.session import ITEM_FIELDS, apply, event_time, new_session
from pipeline.sessions.store import SessionStore
from tests.unit.sessions.script import GAP_S, GRACE_S, add, feed, mapped, options, view

URLS = ["https://shop.example.com/p/sku-1"]


def test_a_line_and_a_view_keep_only_item_fields() -> None:
    signal = mapped(add("s-1", 1, "SKU-1", 2, 9.5, productUrls=URLS))
    content = signal.signal["signalContent"]
    assert set(content) - set(ITEM_FIELDS)  # the event carries more than item fields
    session = new_session(("app", "s-1"), event_time(signal))
    apply(session, signal, event_time(signal))
    (line,) = session.adds.values()
    assert line.item == {k: content[k] for k in ITEM_FIELDS if k in content}
    assert line.item is not content
    seen = mapped(view("s-1", 2, "SKU-2"))
    apply(session, seen, event_time(seen))
    assert set(session.views["SKU-2"].item) <= set(ITEM_FIELDS) - {"itemQuantity"}
    assert session.views["SKU-2"].complete


def test_a_changelog_value_written_by_the_previous_layout_restores_and_encodes_the_same() -> None:
    # a version-1 value as the layout that kept the whole content wrote it (item fields
    # filtered at write time): decoded, then encoded again, byte for byte
    old = orjson.dumps(
        {
            "v": 1,
            "first": 1000,
            "last": 2000,
            "id": {"email": "a@example.com"},
            "id_at": 2000,
            "adds": {
                "e-1": [
                    1000,
                    "USD",
                    {
                        "productId": "SKU-1",
                        "productName": "Pan",
                        "unitPrice": 9.5,
                        "itemQuantity": 2,
                        "productUrls": URLS,
                    },
                ]
            },
            "orders": {},
            "views": {"SKU-2": [1, 1500, 1500, "USD", {"productId": "SKU-2", "unitPrice": 3.0}]},
            "url": [1000, "https://shop.example.com/cart"],
            "err": None,
        }
    )
    state = decode(("app", "s-1"), old)
    assert encode(state) == old


def test_a_closed_marker_keeps_the_derived_signal_and_writes_its_json_form_as_before() -> None:
    # in memory the marker holds the derived signal (mapped once, at the close); its
    # changelog value is the JSON-form event, as before, and restores to the same signal
    store = SessionStore("clicks", options())
    records = [add("s-1", 1, "SKU-1", 2, 9.5, productUrls=URLS), view("s-1", 2, "SKU-2")]
    (derived,) = feed(store, [*records, view("s-2", GAP_S + GRACE_S + 2, "SKU-3")])
    session = new_session(derived.key, 0)
    for record in records:
        signal = mapped(record)
        apply(session, signal, event_time(signal))
    expiry = session.last + GAP_S * 1000
    assert [derived.record] == derived_records(session, expiry, options().derive)
    marker = Closed(5, {derived.kind: derived})
    value = encode(marker)
    assert value == encode(Closed(5, {derived.kind: derived.record}))
    restored = decode(("app", "s-1"), value)
    assert isinstance(restored, Closed)
    assert to_signal(restored.pending[derived.kind], options().derive.mapping) == derived.outcome
    assert store.pending() == [derived]  # the same object: no second trip through the rules
    assert store.pending()[0] is derived
