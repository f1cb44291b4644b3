"""Shared by the ledger tests: a simulator that counts duplicates, replays, sealing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from devtools.clickstream import GeneratedEvent
from devtools.producer import EventEncoder

from pipeline.config import DEFAULT_AVRO_DIR, Settings
from pipeline.kafka.consumer import RunSummary
from pipeline.kafka.replay import Range, bounded_settings, resolve_bounds, run_bounded
from tests.integration.consumer_harness import API_KEY, APP_KEY, REPO, produce


@pytest.fixture(scope="module", name="module_simulator")
def module_simulator_fixture() -> Iterator[Any]:
    from connect_sim.testing import run_simulator

    # Server-side idempotency OFF: every signal the pipeline sends twice is counted.
    with run_simulator(api_key=API_KEY, app_keys=[APP_KEY], extra_args=["--no-idempotency"]) as sim:
        yield sim


@pytest.fixture(name="simulator")
def simulator_fixture(module_simulator: Any) -> Any:
    """One simulator per module (starting one costs seconds), reset for each test."""
    module_simulator.set_faults()
    module_simulator.reset()
    return module_simulator


def produce_sealed(bootstrap: str, topic: str, events: list[GeneratedEvent]) -> None:
    """One partition: the last event alone in its batch, so any broker's end offset is exact."""
    produce(bootstrap, topic, events[:-1])
    produce(bootstrap, topic, events[-1:])


def seal(bootstrap: str, topic: str, partitions: int, events: list[GeneratedEvent]) -> None:
    """One more event per partition, alone in its batch: exact end offsets on any broker."""
    encoder = EventEncoder(DEFAULT_AVRO_DIR)
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, event in zip(range(partitions), events, strict=True):
        producer.produce(topic, value=encoder.encode(event), partition=partition)
        assert producer.flush(30) == 0


def replay_command(settings: Settings, *args: str) -> dict[str, Any]:
    """``connect-pipeline replay ARGS`` as a child process configured by PIPELINE_*
    (as a Kubernetes Job runs it); returns its JSON report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env |= settings.as_environment()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "replay", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def replay_all(settings: Settings, topic: str, *, behind_live: bool = True) -> RunSummary:
    """``connect-pipeline replay --topic <topic> --from-offset 0``, in this process.

    ``behind_live=False`` reads to the end even past the live group's committed offset.
    """
    replaying = bounded_settings(settings, f"{settings.group_id}-replay", [topic])
    live_group = settings.group_id if behind_live else None
    bounds = resolve_bounds(replaying, [topic], [], Range(from_offset=0), live_group=live_group)
    return run_bounded(replaying, bounds)
