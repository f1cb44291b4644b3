"""PIPELINE_WORKERS=2: two consumer processes in one group under one supervisor, with the
embedded broker, the Connect simulator and a real ``connect-pipeline run``.

One run covers the supervisor's job: both workers take partitions, every event is
accepted exactly once, /readyz and /metrics are aggregated on the supervisor's port,
a worker killed with SIGKILL is restarted (and the events after it still arrive),
and SIGTERM drains everything and exits 0.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from devtools.clickstream import clickstream
from devtools.stack import free_port

from tests.integration.consumer_harness import (
    API_KEY,
    APP_KEY,
    consumer_process,
    expected_signals,
    new_topics,
    produce,
    settings_for,
    wait_for,
)
from tests.ops.ops_harness import probe, scrape, value

pytestmark = pytest.mark.integration


@pytest.fixture
def simulator() -> Any:
    from connect_sim.testing import run_simulator

    with run_simulator(api_key=API_KEY, app_keys=[APP_KEY]) as sim:
        yield sim


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _worker_pids(port: int) -> dict[str, int | None]:
    _, body = probe(port, "/healthz")
    return {k: v.get("pid") for k, v in body.items() if k.startswith("worker_")}


def test_two_workers_share_the_group_restart_the_dead_and_drain_on_sigterm(
    kafka_bootstrap: str, simulator: Any, tmp_path: Path
) -> None:
    topic, dlq = new_topics(kafka_bootstrap, partitions=4)
    port = free_port()
    settings = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, workers=2, http_port=port
    )
    process = consumer_process(settings, tmp_path / "run.log")
    try:
        # Both members joined and hold two partitions each before anything is produced,
        # so the work is shared whatever the order of the joins.
        def both_assigned() -> bool:
            status, _ = probe(port, "/readyz")
            samples = scrape(port) if status == 200 else {}
            assigned = [
                value(samples, "connect_signals_assigned_partitions", worker=w) for w in "01"
            ]
            return assigned == [2.0, 2.0]

        wait_for(both_assigned, 60, "both workers ready with two partitions each")

        first = list(clickstream(300, seed=11, invalid_ratio=0.0))
        produce(kafka_bootstrap, topic, first)
        expected = expected_signals(first)
        wait_for(lambda: len(simulator.signals()) >= len(expected), 60, "first 300 accepted")
        samples = scrape(port)
        consumed = [value(samples, "connect_signals_events_consumed_total", worker=w) for w in "01"]
        assert all(c and c > 0 for c in consumed), consumed
        assert sum(c or 0 for c in consumed) == len(first)

        # A worker killed outright is restarted; the other keeps its partitions.
        pids = _worker_pids(port)
        victim = pids["worker_0"]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)

        def restarted() -> bool:
            status, _ = probe(port, "/readyz")
            new = _worker_pids(port)["worker_0"]
            return status == 200 and new not in (None, victim)

        wait_for(restarted, 60, "worker 0 restarted and ready")
        assert value(scrape(port), "connect_signals_worker_restarts_total", worker="0") == 1.0
        assert _worker_pids(port)["worker_1"] == pids["worker_1"]

        second = list(clickstream(200, seed=12, invalid_ratio=0.0))
        produce(kafka_bootstrap, topic, second)
        expected |= expected_signals(second)
        wait_for(lambda: len(simulator.signals()) >= len(expected), 60, "next 200 accepted")

        pids = _worker_pids(port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert not any(_alive(pid) for pid in pids.values() if pid is not None)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    accepted = Counter(row["key"] for row in simulator.signals())
    assert set(accepted) == set(expected)
    assert max(accepted.values()) == 1, [k for k, n in accepted.items() if n > 1]
    assert simulator.stats()["duplicates"] == 0
