"""``connect-pipeline demo``: the whole path on this machine, no Docker.

Starts the embedded Kafka-protocol broker (unless PIPELINE_KAFKA_BOOTSTRAP_SERVERS
points at one) and the Connect simulator, produces a realistic clickstream (a few
percent invalid, some earlier-edition events, both Avro framings, a little garbage),
runs the pipeline until the stream is drained, and prints what was delivered and
dead-lettered, by type and by reason, checked against the simulator's own count.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import click
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from devtools.clickstream import GeneratedEvent, clickstream
from devtools.producer import EventEncoder, produce_events
from pipeline.config import DEFAULT_AVRO_DIR, Settings
from pipeline.kafka.consumer import RunSummary, SignalConsumer
from pipeline.kafka.dead_letters import header_value
from pipeline.kafka.runner import build_processor

DEMO_APP_KEY = "demo-app-key"
DEMO_API_KEY = "demo-api-key"


@dataclass(frozen=True, slots=True)
class DemoResult:
    produced: int
    planted_invalid: int
    planted_garbage: int
    summary: RunSummary
    simulator_stats: dict[str, object]
    dead_letter_reasons: Counter[str]


@contextmanager
def kafka(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from devtools.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()]
    )
    for future in futures.values():
        future.result(30)


def read_dead_letters(bootstrap: str, topic: str, expected: int, timeout_s: float) -> Counter[str]:
    """Count dead-letter records by reason header, reading (not trusting watermarks)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"demo-dlq-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    reasons: Counter[str] = Counter()
    deadline = time.monotonic() + timeout_s
    try:
        while sum(reasons.values()) < expected and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    headers = list(message.headers() or [])
                    reason = header_value(headers, "connect.signals.reason")
                    reasons[reason or "?"] += 1
    finally:
        consumer.close()
    return reasons


def run_demo(events: int, *, seed: int = 7, partitions: int = 3) -> DemoResult:
    from connect_sim.testing import run_simulator

    topic, dlq = "clickstream", "clickstream-dlq"
    with ExitStack() as stack:
        bootstrap = stack.enter_context(kafka(os.environ.get("PIPELINE_KAFKA_BOOTSTRAP_SERVERS")))
        sim = stack.enter_context(run_simulator(api_key=DEMO_API_KEY, app_keys=[DEMO_APP_KEY]))
        create_topics(bootstrap, {topic: partitions, dlq: 1})
        generated: list[GeneratedEvent] = list(clickstream(events, seed=seed))
        encoder = EventEncoder(DEFAULT_AVRO_DIR)
        produce_events(bootstrap, topic, generated, encoder)
        garbage = [b"not avro at all", b"\xc3\x01" + b"\x00" * 8 + b"\x02", b""]
        producer = Producer({"bootstrap.servers": bootstrap})
        for value in garbage:
            producer.produce(topic, key=b"garbage", value=value)
        producer.flush(10)
        settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            topics=[topic],
            dlq_topic=dlq,
            group_id="connect-signals-demo",
            connect_url=sim.graphql_url,
            connect_api_key=DEMO_API_KEY,
            default_app_key=DEMO_APP_KEY,
            session_timeout_ms=6000,
            log_format="console",
        )
        consumer = SignalConsumer(settings, build_processor(settings))
        summary = consumer.run(stop_after_idle_s=3.0)
        invalid = sum(1 for e in generated if e.invalid)
        reasons = read_dead_letters(bootstrap, dlq, invalid + len(garbage), timeout_s=30)
        return DemoResult(len(generated), invalid, len(garbage), summary, sim.stats(), reasons)


def _print_report(result: DemoResult) -> None:
    s = result.summary
    click.echo("")
    click.echo(f"produced   {result.produced} events (+{result.planted_garbage} garbage records)")
    click.echo(f"planted    {result.planted_invalid} invalid events")
    click.echo(f"consumed   {s.consumed}")
    accepted = result.simulator_stats.get("accepted")
    click.echo(f"delivered  {s.delivered_total}  (simulator accepted {accepted})")
    for signal_type, n in sorted(s.delivered.items()):
        click.echo(f"  {signal_type:<22}{n:>8}")
    click.echo(f"dead-lettered {s.dead_lettered_total}")
    for reason, n in sorted(result.dead_letter_reasons.items()):
        click.echo(f"  {reason:<22}{n:>8}")
    click.echo(f"API calls  {s.api_calls} ({s.api_retries} retries)")


@click.command()
@click.option("--events", default=5_000, show_default=True, help="How many events to produce.")
@click.option("--seed", default=7, show_default=True)
def demo(events: int, seed: int) -> None:
    """Run a clickstream through the pipeline on an embedded broker and simulator."""
    result = run_demo(events, seed=seed)
    _print_report(result)
    expected_dlq = result.planted_invalid + result.planted_garbage
    ok = (
        result.summary.delivered_total == result.produced - result.planted_invalid
        and sum(result.dead_letter_reasons.values()) == expected_dlq
    )
    verdict = "OK: every valid event delivered, every invalid one dead-lettered"
    click.echo(verdict if ok else "MISMATCH: see the counts above")
    raise SystemExit(0 if ok else 1)
