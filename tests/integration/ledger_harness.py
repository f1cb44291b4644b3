"""Shared by the ledger tests: a simulator that counts duplicates, replays, sealing."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from devtools.clickstream import GeneratedEvent
from devtools.producer import EventEncoder
from devtools.stack import RUN_COMMAND, pipeline_environment

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
    done = subprocess.run(
        [*RUN_COMMAND, "replay", *args],
        env=pipeline_environment(settings),
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


def create_ledger(bootstrap: str, partitions: int = 1) -> str:
    """A fresh ledger topic, configured as the consumer creates it."""
    from pipeline.kafka.ledger import ensure_ledger_topic

    topic = f"ledger-{uuid.uuid4().hex[:8]}"
    ensure_ledger_topic({"bootstrap.servers": bootstrap}, topic, partitions, 7 * 24 * 3_600_000)
    return topic


def write_ledger(
    bootstrap: str, topic: str, records: Iterable[tuple[str, bytes]], partition: int = 0
) -> int:
    """Ledger records written directly, fast (large batches); returns how many."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "compression.type": "lz4",
        }
    )
    written = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
        written += 1
    assert producer.flush(60) == 0
    return written


def live_writes(
    source_topic: str, source_partition: int, offsets: Iterable[int], accepted_ms: int
) -> Iterator[tuple[str, bytes]]:
    """Ledger records as a live writer leaves them: key ``k-<offset>``, horizons rising."""
    from pipeline.kafka.ledger import Horizons, encode, topic_id

    horizons = Horizons()
    horizons.assigned(source_topic, source_partition, 0)
    tid = topic_id(source_topic)
    for offset in offsets:
        horizon = horizons.next(source_topic, source_partition, offset)
        yield f"k-{offset}", encode(accepted_ms, tid, source_partition, offset, horizon)
