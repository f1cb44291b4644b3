"""A closed session's marker waits for its signals to settle: until then its open
record and the clock record stand for it, and a restore derives the same signals again
(``SessionStore``, "Closing")."""

from __future__ import annotations

import orjson

from pipeline.sessions.changelog import clock_record_key, parse_key, session_record_key
from pipeline.sessions.store import SessionStore
from tests.unit.sessions.script import GAP_S, GRACE_S, add, feed, mapped, ms, options, page

WINDOW = GAP_S + GRACE_S
S1 = ("app-1", "s1")
Log = list[tuple[bytes, bytes | None]]


def values(log: Log) -> dict[tuple[str, str] | None, dict[str, object] | None]:
    """The latest value of each key (None: a tombstone), decoded."""
    out: dict[tuple[str, str] | None, dict[str, object] | None] = {}
    for key, value in log:
        out[parse_key(key)[1]] = None if value is None else orjson.loads(value)
    return out


def commit(store: SessionStore, log: Log) -> Log:
    records = store.take_changes()
    store.committed()
    log += records
    return records


def test_a_close_writes_no_marker_until_its_signal_settles() -> None:
    store = SessionStore("clicks", options())
    log: Log = []
    feed(store, [add("s1", 0, "A")])
    commit(store, log)
    (derived,) = feed(store, [page("x", WINDOW)], first_offset=1)
    records = commit(store, log)
    assert session_record_key("clicks", S1) not in dict(records)  # nothing new for s1
    opened = values(log)[S1]
    assert opened is not None and "closed" not in opened  # still its open record
    state = values(log)
    clock = state[None]
    assert clock is not None and clock["w"] == ms(WINDOW) >= ms(GAP_S + GRACE_S)

    restored = SessionStore.restore("clicks", options(), log)
    (again,) = restored.pending()  # closed again at the restore
    assert again.outcome == derived.outcome  # the same signal, the same key
    assert restored.open_count == 0 and restored.closed_count == 1

    store.settled(S1, derived.kind)
    (marker,) = commit(store, log)
    assert marker[0] == session_record_key("clicks", S1)
    assert orjson.loads(marker[1] or b"") == {"v": 1, "closed": ms(GAP_S), "pending": {}}
    settled = SessionStore.restore("clicks", options(), log)
    assert settled.pending() == [] and settled.closed_count == 1


def test_the_last_events_before_a_close_reach_the_changelog_as_the_open_record() -> None:
    store = SessionStore("clicks", options())
    log: Log = []
    feed(store, [add("s1", 0, "A")])
    commit(store, log)
    # another add and the close between two commits: the record must hold both lines
    (derived,) = feed(store, [add("s1", 5, "B"), page("x", WINDOW + 5)], first_offset=1)
    commit(store, log)
    (again,) = SessionStore.restore("clicks", options(), log).pending()
    assert again.outcome == derived.outcome
    items = again.outcome.signal["signalContent"]["abandonedItems"]  # type: ignore[union-attr]
    assert sorted(i["productId"] for i in items) == ["A", "B"]


def test_a_close_by_the_wall_clock_writes_the_clock() -> None:
    store = SessionStore("clicks", options(idle_s=1))
    log: Log = []
    store.observe(mapped(add("s1", 0, "A")), 0, ms(0))
    commit(store, log)
    (derived,) = store.advance(ms(0) + 1_000 + WINDOW * 1000)  # quiet: the wall closes it
    records = commit(store, log)
    assert [k for k, _ in records] == [clock_record_key("clicks")]
    (again,) = SessionStore.restore("clicks", options(idle_s=1), log).pending()
    assert again.outcome == derived.outcome


def test_an_eviction_writes_its_marker_with_the_signal_at_once() -> None:
    store = SessionStore("clicks", options(max_open=1))
    log: Log = []
    (derived,) = feed(store, [add("s1", 0, "A"), add("s2", 10, "B")])
    assert derived.evicted
    commit(store, log)
    marker = values(log)[S1]
    assert marker is not None and list(marker["pending"]) == ["cartAbandonment"]  # type: ignore[call-overload]
    (again,) = SessionStore.restore("clicks", options(max_open=1), log).pending()
    assert again.outcome == derived.outcome  # the eviction's stamp, kept


def test_an_aborted_commit_writes_the_open_record_again() -> None:
    store = SessionStore("clicks", options())
    feed(store, [add("s1", 0, "A")])
    (derived,) = feed(store, [page("x", WINDOW)], first_offset=1)
    lost = store.take_changes()  # s1 opened and closed since the last commit
    store.aborted()
    again = dict(store.take_changes())
    assert again == dict(lost)
    assert "closed" not in orjson.loads(again[session_record_key("clicks", S1)] or b"")
    (restored,) = SessionStore.restore("clicks", options(), list(again.items())).pending()
    assert restored.outcome == derived.outcome
