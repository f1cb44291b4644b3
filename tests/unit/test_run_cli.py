"""``connect-pipeline run``'s last words: one plain summary line (runner.run stubbed)."""

from __future__ import annotations

from collections import Counter

import pytest
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.kafka import runner
from pipeline.kafka.consumer import RunSummary
from pipeline.kafka.group_join import JoiningConsumer


def test_the_summary_line_counts_what_was_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    summary = RunSummary(consumed=9, delivered=Counter(order=4), skipped=3)
    summary.dead_lettered["validation"] = 2
    joins: list[JoiningConsumer | None] = []

    def run(settings: object, stop_after_idle_s: object = None, joined: object = None) -> object:
        assert isinstance(joined, JoiningConsumer)  # the CLI joined the group first
        joins.append(joined)
        joined.close()
        return summary

    monkeypatch.setattr(runner, "run", run)
    env = {"PIPELINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "PIPELINE_TOPICS": "t"}
    result = CliRunner().invoke(main, ["run"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        "consumed 9, delivered 4, dead-lettered 2, skipped (already accepted) 3"
    )
    assert len(joins) == 1
