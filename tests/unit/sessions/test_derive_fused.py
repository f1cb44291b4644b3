"""A derived signal takes the fused path (no pydantic) and gets what the strict path
(validate, then map) gives: the same signal, or the strict path's rejection."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.sessions import derive
from pipeline.sessions.derive import to_signal, to_signal_strict
from pipeline.signals.mapping import MappedSignal, MappingOptions
from pipeline.signals.outcomes import Rejection
from tests.unit.sessions.script import add, error, order, page, run, view

STREAMS: dict[str, list[dict[str, Any]]] = {
    "one add": [add("s1", 0, "A")],
    "merged, discounted, a cart url": [
        add("s1", 0, "A", 2, price=39.99, discount=5.0, shoppingCartUrl="https://x/cart"),
        add("s1", 10, "B", 3, price=12.99, productUrls=["https://x/b"], productCategory="Tools"),
        add("s1", 20, "A", 1, price=39.99, discount=5.0),
    ],
    "partly ordered": [add("s1", 0, "A"), add("s1", 5, "B"), order("s1", 9, "A")],
    "two currencies": [add("s1", 0, "A"), add("s1", 5, "B", currency="EUR")],
    "an error": [add("s1", 0, "A"), error("s1", 3, "APPLICATION", "Timeout")],
    "views": [
        view("s1", 0, "A"),
        view("s1", 2, "B", tags=["x"]),
        view("s1", 4, "A"),
        page("s1", 5),
    ],
    "views, a user error": [view("s1", 0, "A", currency="GBP"), error("s1", 1, "USER")],
}


@pytest.mark.parametrize("stream", STREAMS.values(), ids=STREAMS.keys())
def test_the_fused_path_gives_the_strict_paths_signal(stream: list[dict[str, Any]]) -> None:
    derived = run(stream)
    assert derived
    for d in derived:
        strict = to_signal_strict(d.record, MappingOptions())
        assert isinstance(strict, MappedSignal)
        assert d.outcome == strict


def test_derived_signals_do_not_take_the_strict_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def strict(record: dict[str, Any], mapping: MappingOptions) -> Any:
        raise AssertionError("the strict path")

    monkeypatch.setattr(derive, "to_signal_strict", strict)
    assert {d.kind for s in STREAMS.values() for d in run(s)} == {
        "cartAbandonment",
        "browseAbandonment",
    }


def test_a_record_the_rules_refuse_gets_the_strict_paths_rejection() -> None:
    (d,) = run([add("s1", 0, "A")])
    record = {**d.record, "currency": "USX"}
    outcome = to_signal(record, MappingOptions())
    assert isinstance(outcome, Rejection)
    assert outcome == to_signal_strict(record, MappingOptions())
    anonymous = {**d.record, "identifiableAttributes": None}
    assert to_signal(anonymous, MappingOptions()) == to_signal_strict(anonymous, MappingOptions())
