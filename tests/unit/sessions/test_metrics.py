"""The session stage's figures on /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from pipeline.ops.session_metrics import register
from pipeline.sessions.stage import SessionStage
from tests.unit.sessions.script import GAP_S, GRACE_S, add, mapped, options, order, view

P0 = ("clicks", 0)


def test_counts_appear_on_scrape() -> None:
    stage = SessionStage(options())
    registry = CollectorRegistry()
    register(registry, stage)
    stage.assign(P0, [])
    stage.observe(P0, mapped(add("s1", 0, "A")), 0, None, b"s1")
    stage.observe(P0, mapped(view("s2", 5, "B")), 1, None, b"other")
    stage.observe(P0, mapped(view("s3", GAP_S + GRACE_S + 5, "C")), 2, None, b"s3")
    stage.observe(P0, mapped(order("s1", 10)), 3, None, b"s1")  # too late
    text = generate_latest(registry).decode()
    assert "connect_signals_sessions_open 1.0" in text
    assert "connect_signals_sessions_late_events_total 1.0" in text
    assert "connect_signals_sessions_unkeyed_events_total 1.0" in text
    assert 'connect_signals_sessions_derived_signals_total{type="cartAbandonment"} 1.0' in text
    assert 'connect_signals_sessions_derived_signals_total{type="browseAbandonment"} 1.0' in text
