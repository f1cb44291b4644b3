"""The consumer's session stage: partitions, split sessions, quiet and held clocks."""

from __future__ import annotations

from pipeline.sessions.stage import SessionStage
from tests.unit.sessions.script import GAP_S, GRACE_S, add, mapped, ms, options, page, view

P0, P1 = ("clicks", 0), ("clicks", 1)


def test_events_not_keyed_by_session_id_are_counted() -> None:
    stage = SessionStage(options())
    stage.assign(P0, [])
    stage.observe(P0, mapped(add("s1", 0, "A")), 0, None, b"s1")
    stage.observe(P0, mapped(add("s1", 1, "A")), 1, None, b"contact-9")
    stage.observe(P0, mapped(add("s1", 2, "A")), 2, None, None)
    assert stage.unkeyed == 2


def test_a_session_on_two_partitions_is_counted() -> None:
    stage = SessionStage(options())
    stage.assign(P0, [])
    stage.assign(P1, [])
    stage.observe(P0, mapped(add("s1", 0, "A")), 0, None, b"s1")
    stage.observe(P1, mapped(add("s2", 0, "A")), 0, None, b"s2")
    assert stage.split == 0
    stage.observe(P1, mapped(page("s1", 5)), 1, None, b"s1")
    assert stage.split == 1
    stage.observe(P1, mapped(page("s1", 6)), 2, None, b"s1")  # counted per event
    assert stage.split == 2


def test_held_partitions_wait_quiet_ones_close() -> None:
    stage = SessionStage(options(idle_s=1))
    stage.assign(P0, [])
    stage.assign(P1, [])
    wall = ms(0)
    stage.observe(P0, mapped(view("s1", 0, "A")), 0, wall, b"s1")
    stage.observe(P1, mapped(view("s2", 0, "B")), 0, wall, b"s2")
    later = wall + 1_000 + (GAP_S + GRACE_S) * 1000
    derived = stage.tick(later, held={P1})
    assert [(p, d.key[1], d.kind) for p, d in derived] == [(P0, "s1", "browseAbandonment")]
    assert stage.open_sessions == 1


def test_revoke_then_assign_elsewhere_moves_sessions_without_loss() -> None:
    old = SessionStage(options())
    old.assign(P0, [])
    old.observe(P0, mapped(add("s1", 0, "A")), 0, None, b"s1")
    old.observe(P0, mapped(add("s2", 0, "B")), 1, None, b"s2")
    closing = mapped(view("s3", GAP_S + GRACE_S, "C"))  # closes s1 and s2
    (first, _second) = old.observe(P0, closing, 2, None, b"s3")
    old.settled(P0, first)
    log = [(k, v) for _, k, v in old.changes()]
    old.committed()
    old.revoke(P0)
    assert old.counters().derived["cartAbandonment"] == 2

    new = SessionStage(options())
    again = new.assign(P0, log)
    assert [(d.key[1], d.kind) for d in again] == [("s2", "cartAbandonment")]
    assert new.open_sessions == 1
    # the stream read again from an older committed offset changes nothing
    assert new.observe(P0, mapped(add("s1", 0, "A")), 0, None, b"s1") == []
    assert new.open_sessions == 1


def test_an_aborted_commit_returns_the_signals_to_send_again() -> None:
    stage = SessionStage(options())
    stage.assign(P0, [])
    stage.observe(P0, mapped(add("s1", 0, "A")), 0, None, b"s1")
    stage.observe(P0, mapped(page("s3", GAP_S + GRACE_S)), 1, None, b"s3")
    written = stage.changes()
    again = stage.aborted()
    assert [(p, d.key[1]) for p, d in again] == [(P0, "s1")]
    assert [k for _, k, _ in stage.changes()] == [k for _, k, _ in written]
