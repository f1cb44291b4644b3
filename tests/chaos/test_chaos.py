"""The chaos run, small: kills, a rebalance, a broker pause and API faults mid-stream.

Real processes throughout: ``connect-pipeline run`` replicas killed with SIGKILL, the
embedded broker frozen with SIGSTOP (or PIPELINE_KAFKA_BOOTSTRAP_SERVERS, then without
the pause), the simulator over HTTP with server-side idempotency off.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from devtools.chaos import (
    ChaosConfig,
    ChaosReport,
    ChaosRun,
    crash_bound,
    plan_actions,
    retry_allowance,
    tally_accepted,
)
from devtools.stack import external_bootstrap

from pipeline.config import Settings
from pipeline.kafka.ledger import duplicate_bound


def test_the_plan_follows_the_seed():
    config = ChaosConfig(kills=3, pause_s=10)
    plan = plan_actions(config)
    assert plan == plan_actions(ChaosConfig(kills=3, pause_s=10))
    assert plan != plan_actions(ChaosConfig(kills=3, pause_s=10, seed=2))
    kinds = [a.kind for a in plan]
    assert kinds.count("kill") == 3 and kinds.count("pause") == 1
    assert kinds.index("join") < kinds.index("leave")
    assert [a.at for a in plan] == sorted(a.at for a in plan)
    assert all(0 < a.at < 1 for a in plan)  # every action lands mid-stream


def test_the_plan_leaves_out_what_is_switched_off():
    assert plan_actions(ChaosConfig(kills=0, pause_s=0, rebalance=False, faults=False)) == []
    kinds = sorted(a.kind for a in plan_actions(ChaosConfig(kills=1, pause_s=0, rebalance=False)))
    assert kinds == ["burst", "burst", "kill"]


def test_tally_separates_resent_retried_lost_and_unexpected():
    rows = [("a", "b1"), ("b", "b1"), ("a", "b1"), ("x", "b2"), ("a", "b3"), ("b", "b4")]
    tally = tally_accepted(rows, {"a", "b", "c"})
    assert tally.rows == 6 and tally.unique == 2
    assert (tally.retried, tally.resent, tally.duplicates) == (1, 2, 3)
    assert tally.unexpected == 1 and tally.lost == ["c"]


def test_served_but_unanswered_calls_allow_one_batch_of_duplicates_each():
    settings = Settings(topics=["t"], batch_max_signals=50)
    stats = {"faults": {"timeout": 2, "drop_after": 1, "drop": 7, "429": 9}}
    assert retry_allowance(stats, settings) == 3 * 50
    assert retry_allowance({}, settings) == 0


def test_crash_bound_is_the_ledger_bound_once_per_kill():
    settings = Settings(topics=["t"], max_in_flight_batches=4, batch_max_signals=50)
    assert duplicate_bound(settings) > 0
    assert crash_bound(3, settings) == 3 * duplicate_bound(settings)
    assert crash_bound(0, settings) == 0


def test_report_fails_on_loss_dead_letter_mismatch_and_excess_duplicates():
    ok = ChaosReport(seed=1, events=10, produced=10, valid=9, invalid=1, dead_lettered=1)
    ok.drained, ok.bound, ok.retry_allowance, ok.duplicates = True, 5, 2, 7
    assert ok.failures() == []
    for change in (
        {"lost": 1},
        {"dead_lettered": 0},
        {"dead_lettered_wrongly": 1},
        {"duplicates": 8},
        {"unexpected_accepted": 1},
        {"drained": False},
        {"crashes": ["A exited 1"]},
    ):
        assert replace(ok, **change).failures(), change


@pytest.mark.integration
def test_small_chaos_run_loses_nothing(tmp_path):
    external = external_bootstrap()
    config = ChaosConfig(
        events=3_000,
        seed=1,
        kills=2,
        pause_s=3.0,
        produce_rate=50.0,  # the live part lasts ~50 s, so the actions land mid-stream
        timeout_s=150.0,
    )
    report = ChaosRun(config, bootstrap=external, log_dir=tmp_path).run()
    print("\n".join(report.lines()))
    assert report.produced == 3_000
    assert report.kills == 2 and report.joins == 1 and report.leaves == 1
    assert report.pause_s == (0.0 if external else 3.0)
    assert report.crashes == []
    assert report.lost == 0, report.lost_sample
    assert report.unexpected_accepted == 0
    assert report.accepted_unique == report.valid
    assert report.invalid > 0 and report.dead_lettered == report.invalid
    assert report.dead_lettered_wrongly == 0
    assert report.duplicates <= report.allowed_duplicates
    assert report.simulator["faults"], "the simulator injected no fault"
    assert report.failures() == []
