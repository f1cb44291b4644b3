"""The consumer's hooks without a broker (a replay: no changelog, event time only)."""

from __future__ import annotations

import json

from confluent_kafka import Message

from pipeline.config import Settings
from pipeline.kafka.session_hooks import DERIVED_HEADER, SessionHooks, build_session_hooks
from pipeline.signals.mapping import MappedSignal
from tests.unit.sessions.script import GAP_S, GRACE_S, add, mapped, options, view


def message(offset: int, session: str) -> Message:
    return Message(topic="clicks", partition=2, offset=offset, key=session.encode(), value=b"")


def test_derived_signals_come_back_as_messages_of_their_partition() -> None:
    hooks = SessionHooks(Settings(topics=["clicks"]), options(), changelog=False)
    assert hooks.assign([("clicks", 2)]) == []
    assert hooks.observe(message(7, "s1"), mapped(add("s1", 0, "A"))) == []
    (emit,) = hooks.observe(message(8, "s2"), mapped(view("s2", GAP_S + GRACE_S, "B")))
    assert emit.signal_type == "cartAbandonment"
    assert isinstance(emit.outcome, MappedSignal)
    assert (emit.message.topic(), emit.message.partition()) == ("clicks", 2)
    assert emit.message.offset() == 8  # derived after this record
    assert emit.message.key() == b"s1"
    assert json.loads(emit.message.value() or b"")["eventId"] == emit.outcome.idempotency_key
    assert emit.message.headers() == [(DERIVED_HEADER, b"cartAbandonment")]
    assert hooks.tick(held=()) == []  # a replay: no wall clock
    assert hooks.write(lambda *a, **k: None) == 0  # and no changelog
    assert [e.signal_type for e in hooks.aborted()] == ["cartAbandonment"]
    emit.settled()
    assert hooks.aborted() == []


def test_built_only_when_derivation_is_on_and_not_for_a_redrive() -> None:
    off = Settings(topics=["clicks"])
    on = Settings(topics=["clicks"], derive_abandonment="cart")
    assert build_session_hooks(off, None, bounded=False, redrive=False) is None
    assert build_session_hooks(on, None, bounded=False, redrive=True) is None
    hooks = build_session_hooks(on, None, bounded=True, redrive=False)
    assert hooks is not None and hooks.stage.options.derive.kinds == {"cartAbandonment"}
