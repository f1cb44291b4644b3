"""BackgroundLookups: registry look-ups off the poll loop (one function, a gated fetch)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pipeline.codec.registry_lookups import BackgroundLookups, LookupPending


class GatedFetch:
    """A fetch that answers ``answer(id)`` once its gate opens; counts its calls."""

    def __init__(self, *, open_: bool = False) -> None:
        self.gate = threading.Event()
        if open_:
            self.gate.set()
        self.calls: list[int | str] = []
        self.fail: Exception | None = None

    def __call__(self, schema_id: int | str) -> Any:
        self.calls.append(schema_id)
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        return f"schema {schema_id}"


def until_done(lookups: BackgroundLookups, schema_id: int) -> Any:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            return lookups(schema_id)
        except LookupPending:
            time.sleep(0.01)
    raise AssertionError("the look-up never finished")


def test_a_prompt_answer_is_returned_at_once() -> None:
    fetch = GatedFetch(open_=True)
    lookups = BackgroundLookups(fetch, wait_s=1.0)
    assert lookups(7) == "schema 7"
    assert lookups(7) == "schema 7"  # handed over once: asked again
    assert fetch.calls == [7, 7] and lookups.running == 0


def test_a_slow_answer_is_pending_asked_once_and_handed_over_when_done() -> None:
    fetch = GatedFetch()
    lookups = BackgroundLookups(fetch, wait_s=0.01)
    started = time.monotonic()
    with pytest.raises(LookupPending):
        lookups(7)
    with pytest.raises(LookupPending):
        lookups(7)
    assert time.monotonic() - started < 1.0  # the caller never waits for the registry
    assert fetch.calls == [7] and lookups.running == 1
    fetch.gate.set()
    assert until_done(lookups, 7) == "schema 7"
    assert fetch.calls == [7] and lookups.running == 0


def test_the_registry_clients_error_is_raised_to_the_caller() -> None:
    fetch = GatedFetch()
    fetch.fail = TimeoutError("the registry did not answer")
    lookups = BackgroundLookups(fetch, wait_s=0.01)
    with pytest.raises(LookupPending):
        lookups(7)
    fetch.gate.set()
    with pytest.raises(TimeoutError, match="did not answer"):
        until_done(lookups, 7)
    assert lookups.running == 0


def test_running_look_ups_are_bounded_and_answers_left_behind_make_room() -> None:
    fetch = GatedFetch()
    lookups = BackgroundLookups(fetch, wait_s=0.01, max_running=2)
    for schema_id in (1, 2, 3):
        with pytest.raises(LookupPending):
            lookups(schema_id)
    assert fetch.calls == [1, 2]  # the third waits for a slot, not started
    fetch.gate.set()
    deadline = time.monotonic() + 5
    while len(fetch.calls) < 3 and time.monotonic() < deadline:
        try:
            lookups(3)  # 1 and 2 are done and never collected: dropped for 3
        except LookupPending:
            time.sleep(0.01)
    assert fetch.calls == [1, 2, 3]
    assert lookups.running <= 2
