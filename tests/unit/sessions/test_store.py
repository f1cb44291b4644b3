"""Time and state: expiry in event time, grace, late events, quiet partitions, the cap,
restore from the changelog, replays, settling."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.sessions.changelog import decode, parse_key, session_record_key
from pipeline.sessions.store import Derived, SessionStore
from pipeline.signals.mapping import MappedSignal
from tests.unit.sessions.script import (
    GAP_S,
    GRACE_S,
    add,
    at,
    feed,
    mapped,
    ms,
    options,
    order,
    page,
    signals,
    view,
)

WINDOW = GAP_S + GRACE_S
# the store's contract, with its states in memory and in RocksDB
pytestmark = pytest.mark.usefixtures("each_store")


def kinds(derived: list[Derived]) -> list[tuple[str, str]]:
    return [(d.key[1], d.kind) for d in derived]


def test_a_session_closes_when_event_time_passes_expiry_plus_grace() -> None:
    store = SessionStore("clicks", options())
    assert feed(store, [add("s1", 0, "A"), view("s2", 100, "B")]) == []
    # s2's events move the watermark; s1 closes once it passes 0 + gap + grace
    assert feed(store, [page("s2", WINDOW - 1)], first_offset=2) == []
    derived = feed(store, [page("s2", WINDOW)], first_offset=3)
    assert kinds(derived) == [("s1", "cartAbandonment")]
    assert signals(derived)[0]["signalContent"]["signalTimestamp"] == at(GAP_S)
    assert store.open_count == 1 and store.counters.closed == 1


def test_page_views_alone_open_no_session() -> None:
    store = SessionStore("clicks", options())
    feed(store, [page("s1", 0), page("s1", 10), page("s2", 20)])
    assert store.open_count == 0 and store.clock.watermark == ms(20)
    feed(store, [add("s1", 30, "A"), page("s1", 100)], first_offset=3)
    (derived,) = store.close_all()
    # the page view after the add extends the session: it expires gap after it
    assert signals([derived])[0]["signalContent"]["signalTimestamp"] == at(100 + GAP_S)


def test_an_order_within_the_grace_cancels_the_cart() -> None:
    store = SessionStore("clicks", options())
    stream = [
        add("s1", 0, "A"),
        page("s2", GAP_S + 30),  # s1 expired in event time, but its grace runs
        order("s1", 10),  # late, within the grace: still counts
        page("s2", GAP_S + 200),
    ]
    assert feed(store, stream) == []
    assert store.counters.late == 0 and store.counters.closed == 1


def test_events_later_than_the_grace_are_counted_and_reopen_nothing() -> None:
    store = SessionStore("clicks", options())
    derived = feed(store, [add("s1", 0, "A"), page("s2", WINDOW + 5)])
    assert kinds(derived) == [("s1", "cartAbandonment")]
    # the order comes too late: the cart stays abandoned, s1 is not reopened
    assert feed(store, [order("s1", 10), add("s3", 1, "B")], first_offset=2) == []
    assert store.counters.late == 2
    assert not store.is_open(("app-1", "s1")) and not store.is_open(("app-1", "s3"))
    assert feed(store, [page("s2", 3 * WINDOW)], first_offset=4) == []


def test_an_event_after_its_sessions_gap_ends_the_session_and_opens_nothing() -> None:
    store = SessionStore("clicks", options())
    derived = feed(store, [add("s1", 0, "A"), page("s1", GAP_S + 1)])
    assert kinds(derived) == [("s1", "cartAbandonment")]
    assert store.counters.reused == 1 and store.open_count == 0


def test_a_quiet_partition_closes_sessions_with_the_wall_clock() -> None:
    store = SessionStore("clicks", options(idle_s=5))
    wall = ms(0)
    store.observe(mapped(view("s1", 0, "A")), offset=0, wall_ms=wall)
    assert store.advance(wall + 5_000) == []  # not quiet for longer than idle yet
    # quiet: the watermark follows the wall clock from where the events left it
    assert store.advance(wall + 5_000 + WINDOW * 1000 - 1) == []
    derived = store.advance(wall + 5_000 + WINDOW * 1000)
    assert kinds(derived) == [("s1", "browseAbandonment")]
    assert signals(derived)[0]["signalContent"]["signalTimestamp"] == at(GAP_S)


def test_a_held_partition_is_not_quiet() -> None:
    store = SessionStore("clicks", options(idle_s=5))
    wall = ms(0)
    store.observe(mapped(add("s1", 0, "A")), offset=0, wall_ms=wall)
    late_wall = wall + 10 * WINDOW * 1000
    store.hold(late_wall)  # paused or catching up: unread events may hold its order
    assert store.advance(late_wall + 5_000) == []
    store.observe(mapped(order("s1", 60)), offset=1, wall_ms=late_wall + 6_000)
    assert store.advance(late_wall + 6_000 + 5_000 + WINDOW * 1000) == []
    assert store.counters.closed == 1 and store.open_count == 0


def test_events_far_ahead_of_the_wall_clock_do_not_expire_everything() -> None:
    store = SessionStore("clicks", options())
    wall = ms(0)
    store.observe(mapped(add("s1", 0, "A")), offset=0, wall_ms=wall)
    store.observe(mapped(view("s2", 100 * WINDOW, "B")), offset=1, wall_ms=wall)
    assert store.open_count == 2 and store.clock.watermark == wall + GAP_S * 1000


def test_the_cap_closes_the_longest_idle_session_early() -> None:
    store = SessionStore("clicks", options(max_open=2))
    stream = [add("s1", 0, "A"), add("s2", 10, "B"), add("s1", 20, "C"), add("s3", 30, "D")]
    derived = feed(store, stream)
    assert kinds(derived) == [("s2", "cartAbandonment")]
    assert derived[0].evicted and store.counters.evicted == 1
    # decided early: stamped with the watermark (s3's event), not a moment to come
    assert signals(derived)[0]["signalContent"]["signalTimestamp"] == at(30)
    assert store.open_count == 2


def test_records_read_again_are_not_applied_twice() -> None:
    store = SessionStore("clicks", options())
    stream = [add("s1", 0, "A", 2), add("s1", 5, "A", 1)]
    feed(store, stream)
    feed(store, stream)  # offsets 0 and 1 again: a rewind after an aborted transaction
    (signal,) = signals(store.close_all())
    assert signal["signalContent"]["abandonedItems"][0]["itemQuantity"] == 3


def _stream() -> list[dict[str, Any]]:
    return [
        add("c1", 0, "A", 2),
        view("b1", 5, "X"),
        add("c2", 10, "B"),
        view("b1", 20, "Y"),
        view("b1", 25, "X"),
        order("c2", 30),
        add("c1", 40, "A"),
        page("p1", 50),
        view("v1", 60, "Z"),
        add("v1", 70, "Z"),
        add("late", 80, "L"),
        page("d1", WINDOW + 100),  # closes every session above
        order("late", 85),  # later than the grace: ignored, the cart stays abandoned
        page("d2", 2 * WINDOW + 200),  # closes d1
        page("d3", 4 * WINDOW),  # closes d2, forgets the closed sessions
    ]


EXPECTED = [
    ("b1", "browseAbandonment"),
    ("c1", "cartAbandonment"),
    ("late", "cartAbandonment"),
    ("v1", "cartAbandonment"),
]


def _replay(store: SessionStore, stream: list[dict[str, Any]], start: int) -> list[Derived]:
    return feed(store, stream[start:], first_offset=start)


def _settle(store: SessionStore, derived: list[Derived]) -> None:
    for d in derived:
        store.settled(d.key, d.kind)


def test_the_scripted_stream() -> None:
    store = SessionStore("clicks", options())
    derived = _replay(store, _stream(), 0)
    assert sorted(kinds(derived)) == EXPECTED
    assert store.counters.late == 1 and store.counters.reused == 0
    _settle(store, derived)
    # settled and past expiry + gap + grace: forgotten (nothing of theirs can come in
    # time); the d sessions' page views opened none
    assert store.closed_count == 0 and store.open_count == 0
    assert store.close_all() == []


@pytest.mark.parametrize("cut", range(len(_stream()) + 1))
@pytest.mark.parametrize("settled", [True, False])
def test_restore_from_the_changelog_gives_the_same_output(cut: int, settled: bool) -> None:
    stream = _stream()
    whole = SessionStore("clicks", options())
    expected = _replay(whole, stream, 0)

    first = SessionStore("clicks", options())
    before = _replay(first, stream[:cut], 0)
    if settled:
        _settle(first, before)
    log = first.take_changes()
    first.committed()
    # A restart: the state from the changelog, the signals it had not settled again,
    # then the stream from the committed offset, which may be behind the state.
    restored = SessionStore.restore("clicks", options(), log)
    again = restored.pending()
    assert [(d.key, d.kind) for d in again] == (
        [] if settled else sorted((d.key, d.kind) for d in before)
    )
    after = _replay(restored, stream, max(0, cut - 2))
    got = [(d.key, d.kind, d.outcome) for d in before + after]
    assert got == [(d.key, d.kind, d.outcome) for d in expected]
    if not settled:  # the same signals, with the same idempotency keys
        assert [d.outcome for d in again] == [
            d.outcome for d in sorted(before, key=lambda d: (d.key, d.kind))
        ]


def test_a_replay_derives_the_same_signals() -> None:
    runs = []
    for _ in range(2):
        store = SessionStore("clicks", options())
        derived = _replay(store, _stream(), 0)
        runs.append(
            [
                (d.outcome.idempotency_key, d.outcome.signal)
                for d in derived
                if isinstance(d.outcome, MappedSignal)
            ]
        )
    assert runs[0] == runs[1] and len(runs[0]) == len(EXPECTED)


def test_unsettled_signals_survive_a_restart_settled_ones_do_not() -> None:
    store = SessionStore("clicks", options())
    derived = feed(store, [add("s1", 0, "A"), add("s2", 0, "B"), page("s3", WINDOW)])
    assert kinds(derived) == [("s1", "cartAbandonment"), ("s2", "cartAbandonment")]
    store.settled(("app-1", "s1"), "cartAbandonment")
    restored = SessionStore.restore("clicks", options(), store.take_changes())
    (again,) = restored.pending()
    assert again.key == ("app-1", "s2")
    assert again.outcome == derived[1].outcome  # same signal, same idempotency key


def test_closed_sessions_leave_a_tombstone_once_nothing_can_arrive_in_time() -> None:
    store = SessionStore("clicks", options())
    feed(store, [add("s1", 0, "A"), page("s2", WINDOW)])
    log = store.take_changes()
    values = {parse_key(k)[1]: v for k, v in log}
    assert values[("app-1", "s1")] is not None  # closed, its signal pending
    store.settled(("app-1", "s1"), "cartAbandonment")
    feed(store, [page("s2", GAP_S + 2 * WINDOW)], first_offset=2)
    later = store.take_changes()
    assert (session_record_key("clicks", ("app-1", "s1")), None) in later  # a tombstone
    restored = SessionStore.restore("clicks", options(), log + later)
    assert restored.open_count == 0 and restored.closed_count == 0
    assert restored.applied_offset == 2


def test_a_session_gone_before_any_commit_wrote_it_needs_no_tombstone() -> None:
    store = SessionStore("clicks", options())
    feed(store, [add("old", 0, "A"), page("x", 1)])
    store.take_changes()  # "old" is in the changelog
    store.committed()
    # "new" opens, closes, settles and is forgotten between two commits; "old" too
    derived = feed(store, [add("new", 2, "B"), page("x", GAP_S + 2 * WINDOW)], first_offset=2)
    assert kinds(derived) == [("old", "cartAbandonment"), ("new", "cartAbandonment")]
    for d in derived:
        store.settled(d.key, d.kind)
    records = dict(store.take_changes())
    assert records[session_record_key("clicks", ("app-1", "old"))] is None  # its tombstone
    assert session_record_key("clicks", ("app-1", "new")) not in records  # nothing at all
    restored = SessionStore.restore("clicks", options(), list(records.items()))
    assert restored.open_count == 0 and restored.closed_count == 0


def test_a_session_reopened_before_its_tombstone_was_written_still_gets_one() -> None:
    store = SessionStore("clicks", options())
    feed(store, [add("s1", 0, "A")])
    log = store.take_changes()  # s1 open, in the changelog
    store.committed()
    (closed,) = feed(store, [page("x", GAP_S + 2 * WINDOW)], first_offset=1)
    store.settled(closed.key, closed.kind)  # forgotten: a tombstone due
    # the id comes back as a new session, which ends before the commit too
    late = GAP_S + 2 * WINDOW
    feed(store, [add("s1", late, "B"), page("x", late + 2 * WINDOW)], first_offset=2)
    store.settled(("app-1", "s1"), "cartAbandonment")
    records = dict(store.take_changes())
    assert records[session_record_key("clicks", ("app-1", "s1"))] is None
    restored = SessionStore.restore("clicks", options(), log + list(records.items()))
    assert restored.open_count == 0 and restored.closed_count == 0


def test_an_aborted_transactions_changes_are_written_again() -> None:
    store = SessionStore("clicks", options())
    feed(store, [add("s1", 0, "A")])
    lost = store.take_changes()
    store.aborted()
    again = store.take_changes()
    assert [k for k, _ in again] == [k for k, _ in lost]
    store.committed()
    assert store.take_changes() == []


def test_restore_reads_only_its_topics_records() -> None:
    a = SessionStore("a", options())
    feed(a, [add("s1", 0, "A")])
    b = SessionStore("b", options())
    feed(b, [add("s2", 0, "B"), add("s3", 0, "B")])
    log = a.take_changes() + b.take_changes()
    assert SessionStore.restore("a", options(), log).open_count == 1
    assert SessionStore.restore("b", options(), log).open_count == 2
    for key, value in log:
        topic, session = parse_key(key)
        assert topic in ("a", "b")
        assert value is not None
        decode(session, value)


def test_cart_only_keeps_no_session_for_views() -> None:
    store = SessionStore("clicks", options("cart"))
    feed(store, [view("s1", 0, "A"), view("s1", 5, "B"), add("s2", 0, "C")])
    assert store.open_count == 1
    assert kinds(store.close_all()) == [("s2", "cartAbandonment")]


def test_the_wall_clock_alone_writes_no_changelog_record() -> None:
    store = SessionStore("clicks", options(idle_s=1))
    store.observe(mapped(add("s1", 0, "A")), offset=0, wall_ms=ms(0))
    store.take_changes()
    store.committed()
    assert store.advance(ms(0) + 5_000) == []  # the watermark moved; nothing closed
    assert store.take_changes() == []  # an idle partition commits nothing


def test_the_states_live_where_the_store_says(each_store: str) -> None:
    store = SessionStore("clicks", options())
    feed(store, [add("s1", 0, "A")])
    table = type(store._open).__name__
    assert table == {"memory": "MemoryTable", "rocksdb": "RocksTable"}[each_store]
