"""What a session derives: cart and browse abandonment as the issue defines them."""

from __future__ import annotations

import random

from pipeline.sessions.derive import idempotency_key
from pipeline.sessions.session import timestamp_ms
from pipeline.signals.mapping import MappedSignal, format_millis
from tests.unit.sessions.script import (
    APP,
    GAP_S,
    add,
    at,
    error,
    ms,
    options,
    order,
    page,
    run,
    signals,
    view,
)


def content(signal: dict) -> dict:
    return signal["signalContent"]


def test_cart_then_order_of_everything_derives_nothing() -> None:
    stream = [add("s1", 0, "A", 2), add("s1", 60, "B"), order("s1", 120, "A", "B")]
    assert run(stream) == []


def test_order_without_items_is_the_whole_carts_checkout() -> None:
    assert run([add("s1", 0, "A"), add("s1", 30, "B"), order("s1", 60)]) == []


def test_cart_then_nothing_is_one_cart_abandonment() -> None:
    url = "https://www.example.com/cart"
    stream = [
        page("s1", 0),
        add("s1", 10, "A", 2, price=39.99, discount=5.0, shoppingCartUrl=url),
        add("s1", 20, "B", 3, price=12.99),
        add("s1", 30, "A", 1, price=39.99, discount=5.0),  # merged with the first
        page("s1", 40),
    ]
    derived = run(stream)
    assert [d.kind for d in derived] == ["cartAbandonment"]
    (signal,) = signals(derived)
    assert signal["appKey"] == APP
    assert signal["sessionId"] == "s1"
    assert signal["identifiableAttributes"] == {"email": "s1@example.com"}
    body = content(signal)
    assert body["signalType"] == "cartAbandonment"
    assert body["effect"] == "negative"
    assert body["category"] == "Behavior"
    assert body["currency"] == "USD"
    assert body["shoppingCartUrl"] == url
    assert [(i["productId"], i["itemQuantity"]) for i in body["abandonedItems"]] == [
        ("A", 3),
        ("B", 3),
    ]
    assert body["abandonedItems"][0]["discount"] == 5.0
    # 3 x (39.99 - 5) + 3 x 12.99, exactly
    assert body["abandonedCartValue"] == 143.94
    # the expiry moment: gap after the session's last event
    assert body["signalTimestamp"] == at(40 + GAP_S)
    assert "abandonmentReason" not in body
    assert derived[0].outcome.idempotency_key == idempotency_key((APP, "s1"), "cartAbandonment")


def test_an_order_removes_the_products_it_lists() -> None:
    stream = [add("s1", 0, "A"), add("s1", 10, "B", 2), order("s1", 20, "A")]
    (signal,) = signals(run(stream))
    items = content(signal)["abandonedItems"]
    assert [(i["productId"], i["itemQuantity"]) for i in items] == [("B", 2)]
    assert content(signal)["abandonedCartValue"] == 20.0


def test_products_added_after_an_order_are_a_new_cart() -> None:
    stream = [add("s1", 0, "A"), order("s1", 10), add("s1", 20, "A"), add("s1", 30, "C")]
    (signal,) = signals(run(stream))
    assert [i["productId"] for i in content(signal)["abandonedItems"]] == ["A", "C"]


def test_order_arriving_before_an_earlier_add_still_removes_it() -> None:
    # out of order within the grace: facts are applied by event time, not arrival
    in_order = run([add("s1", 0, "A"), add("s1", 5, "B"), order("s1", 10, "A")])
    shuffled = run([order("s1", 10, "A"), add("s1", 5, "B"), add("s1", 0, "A")])
    assert signals(in_order) == signals(shuffled)
    assert [i["productId"] for i in content(signals(in_order)[0])["abandonedItems"]] == ["B"]


def test_a_cart_in_several_currencies_keeps_the_latest_currencys_lines() -> None:
    stream = [
        add("s1", 0, "A", price=10.0, currency="USD"),
        add("s1", 10, "B", price=9.0, currency="EUR"),
    ]
    (signal,) = signals(run(stream))
    assert content(signal)["currency"] == "EUR"
    assert [i["productId"] for i in content(signal)["abandonedItems"]] == ["B"]
    assert content(signal)["abandonedCartValue"] == 9.0


def test_same_add_delivered_twice_is_one_add() -> None:
    first = add("s1", 0, "A", 2)
    (signal,) = signals(run([first, dict(first)]))
    assert content(signal)["abandonedItems"][0]["itemQuantity"] == 2


def test_views_only_is_one_browse_abandonment_most_viewed_first() -> None:
    stream = [
        view("s1", 0, "A", inventoryQuantity=9),
        view("s1", 10, "B"),
        view("s1", 20, "B"),
        view("s1", 30, "C", price=None),  # no price: not an abandoned item
        view("s1", 40, "D", currency="EUR"),  # another currency than the top product's
        view("s1", 50, "A", inventoryQuantity=4, imageUrls=["https://x/a.jpg"]),
        view("s1", 45, "A", price=None),  # arrives late, has no price: describes nothing
    ]
    derived = run(stream)
    assert [d.kind for d in derived] == ["browseAbandonment"]
    (signal,) = signals(derived)
    body = content(signal)
    assert body["currency"] == "USD"
    assert body["effect"] == "negative"
    assert [i["productId"] for i in body["abandonedItems"]] == ["A", "B"]
    assert body["abandonedItems"][0]["inventoryQuantity"] == 4  # its latest priced view
    assert body["abandonedItems"][0]["imageUrls"] == ["https://x/a.jpg"]
    for item in body["abandonedItems"]:
        assert {"productId", "productName", "unitPrice"} <= set(item)
    assert body["signalTimestamp"] == at(50 + GAP_S)


def test_browse_abandonment_keeps_at_most_n_items() -> None:
    stream = [view("s1", t, f"P{t}") for t in range(12)] + [view("s1", 20, "P5")]
    (signal,) = signals(run(stream, options(max_items=3)))
    assert [i["productId"] for i in content(signal)["abandonedItems"]] == ["P5", "P0", "P1"]


def test_views_without_a_price_derive_nothing() -> None:
    assert run([view("s1", 0, "A", price=None), view("s1", 5, "B", currency=None)]) == []


def test_views_then_add_is_a_cart_abandonment_only() -> None:
    derived = run([view("s1", 0, "A"), view("s1", 10, "A"), add("s1", 20, "A")])
    assert [d.kind for d in derived] == ["cartAbandonment"]


def test_views_then_order_derives_nothing() -> None:
    assert run([view("s1", 0, "A"), order("s1", 20)]) == []


def test_only_the_configured_kinds() -> None:
    stream = [view("s1", 0, "A"), add("s2", 0, "B")]
    assert [d.kind for d in run(stream, options("cart"))] == ["cartAbandonment"]
    assert [d.kind for d in run(stream, options("browse"))] == ["browseAbandonment"]


def test_abandonment_reason_from_the_latest_error() -> None:
    stream = [
        add("s1", 0, "A"),
        error("s1", 10, "application", "Server error"),
        error("s1", 20, "USER", "Payment form validation errors"),
    ]
    body = content(signals(run(stream))[0])
    assert body["abandonmentReason"] == "USER_ERRORS"
    assert body["abandonmentReasonDescription"] == "Payment form validation errors"
    body = content(signals(run([view("s2", 0, "A"), error("s2", 5, "application")]))[0])
    assert body["abandonmentReason"] == "APPLICATION_ERROR"


def test_each_session_derives_its_own_signal_with_its_own_key() -> None:
    derived = run([add("s1", 0, "A"), add("s2", 0, "A"), add("s1", 10, "B")])
    keys = {
        d.key: d.outcome.idempotency_key for d in derived if isinstance(d.outcome, MappedSignal)
    }
    assert keys == {
        (APP, "s1"): idempotency_key((APP, "s1"), "cartAbandonment"),
        (APP, "s2"): idempotency_key((APP, "s2"), "cartAbandonment"),
    }
    assert len(set(keys.values())) == 2


def test_timestamps_round_trip() -> None:
    assert timestamp_ms(at(12.345)) == ms(12.345)
    assert timestamp_ms("2025-08-31T08:00:00+00:00") == ms(0)


def test_event_times_read_from_their_digits_are_exact() -> None:
    # the minute cached, seconds and milliseconds from the digits: any ms 1970..2100
    rng = random.Random(3)
    randoms = [rng.randrange(4 * 10**12) for _ in range(20_000)]
    for moment in [0, 59_999, 60_000, 4_102_444_799_999, *randoms]:
        assert timestamp_ms(format_millis(moment)) == moment
