"""``connect-pipeline demo``: the whole path on this machine, no Docker.

Starts the embedded Kafka-protocol broker (unless PIPELINE_KAFKA_BOOTSTRAP_SERVERS
points at one) and the Connect simulator, produces a realistic clickstream (a few
percent invalid, some earlier-edition events, both Avro framings, a little garbage),
runs the pipeline until the stream is drained, and prints what was delivered and
dead-lettered, by type and by reason, checked against the simulator's own count.

Derived abandonment is on (``both``) with a 3-second session gap in event time, and
the clickstream's time is compressed to match (``DEMO_PACE``): sessions close while
the stream runs, the last ones when the partitions have been quiet for the gap (the
wall clock moves their clocks on). The demo waits for those, then reports the
derived signals: counts by type and one example.

The terminal shows one live progress line (produced, delivered, dead-lettered) and
the report; the pipeline's own log lines (one per dead letter, librdkafka's) go to a
log file the report names.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

import click
import structlog
from confluent_kafka import Producer

from devtools.clickstream import GeneratedEvent, clickstream
from devtools.producer import EventEncoder, produce_events
from devtools.progress import Counts, ProgressLine, pipeline_counts
from devtools.stack import create_topics, kafka, simulator
from pipeline.cli.dlq import read_dead_letters
from pipeline.config import DEFAULT_AVRO_DIR, Settings
from pipeline.kafka.consumer import RunSummary, SignalConsumer
from pipeline.kafka.runner import build_processor
from pipeline.ops.logs import configure_logging
from pipeline.ops.metrics import PREFIX
from pipeline.sessions.derive import BROWSE, CART

DEMO_APP_KEY = "demo-app-key"
T = TypeVar("T")
DEMO_API_KEY = "demo-api-key"
#: Session gap and grace (event time); the clickstream's pace puts a session's events
#: ~0.3 s apart, so 3 s of silence ends it (an hour of visits in about a minute). The
#: last sessions close ~gap + grace after the stream's end (+1 s: a partition is quiet).
DEMO_SESSION_GAP_S: Final = 3.0
DEMO_SESSION_GRACE_S: Final = 0.5
DEMO_PACE: Final = 0.03
#: How long the stream must have been idle, with no session open, before the demo ends.
IDLE_S: Final = 0.5
#: At most this long waiting for the sessions of a stream that keeps arriving.
SETTLE_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class DerivedReport:
    """The derived abandonment signals Connect accepted, from the simulator's record."""

    by_type: Counter[str]
    example: dict[str, Any] | None
    late_events: int

    @property
    def total(self) -> int:
        return sum(self.by_type.values())


@dataclass(frozen=True, slots=True)
class DemoResult:
    produced: int
    planted_invalid: int
    planted_garbage: int
    summary: RunSummary
    simulator_stats: dict[str, object]
    dead_letter_reasons: Counter[str]
    log_path: Path | None = None
    derived: DerivedReport | None = None


@contextmanager
def logging_to(stream: TextIO, settings: Settings) -> Iterator[None]:
    """The pipeline's log lines (and librdkafka's) into ``stream`` for the block; the
    process's logging as it was afterwards (the demo also runs inside tests)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.excepthook, threading.excepthook)
    saved_structlog = structlog.get_config()
    configure_logging(settings, stream)
    try:
        yield
    finally:
        root.handlers, root.level, sys.excepthook, threading.excepthook = saved
        structlog.configure(**saved_structlog)


class _Live:
    """What the progress line reads: produced so far, and the consumer once it runs."""

    def __init__(self, planned: int) -> None:
        self.planned = planned
        self.produced = 0
        self.consumer: SignalConsumer | None = None

    def counting(self, items: Iterable[T]) -> Iterator[T]:
        for item in items:
            yield item
            self.produced += 1

    def counts(self) -> Counts:
        consumer = self.consumer
        delivered, dead = pipeline_counts(consumer.metrics.registry if consumer else None)
        return Counts(self.produced, self.planned, delivered, dead)

    def settled(self) -> bool:
        """Everything produced is read and finished, and no session is open."""
        consumer = self.consumer
        if consumer is None or consumer.summary.consumed < self.planned or not consumer.idle:
            return False
        open_sessions = consumer.metrics.registry.get_sample_value(f"{PREFIX}_sessions_open")
        return not open_sessions


def _stop_when_settled(live: _Live) -> threading.Thread:
    """Stops the consumer once the stream is read and the last sessions closed and
    their signals delivered (``settled`` for IDLE_S in a row), or after SETTLE_TIMEOUT_S."""

    def watch() -> None:
        started = time.monotonic()
        since: float | None = None
        while live.consumer is not None:
            now = time.monotonic()
            if live.settled():
                since = since or now
                if now - since >= IDLE_S:
                    break
            else:
                since = None
            if now - started > SETTLE_TIMEOUT_S:
                break
            time.sleep(0.05)
        if live.consumer is not None:
            live.consumer.stop()

    thread = threading.Thread(target=watch, name="demo-settle", daemon=True)
    thread.start()
    return thread


def derived_report(accepted: Iterable[dict[str, Any]], late_events: int) -> DerivedReport:
    """Derived signals among the simulator's accepted ones: their idempotency keys
    start with their type (``pipeline.sessions.derive.idempotency_key``)."""
    by_type: Counter[str] = Counter()
    example = None
    for row in accepted:
        key = str(row.get("key") or "")
        kind = next((k for k in (CART, BROWSE) if key.startswith(f"{k}-")), None)
        if kind is None:
            continue
        by_type[kind] += 1
        if example is None or (kind == CART and example["kind"] != CART):
            example = {"kind": kind, "signal": row["signal"]}
    return DerivedReport(by_type, example, late_events)


def default_log_path() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.gettempdir()) / f"connect-pipeline-demo-{stamp}.log"


def run_demo(
    events: int,
    *,
    seed: int = 7,
    partitions: int = 3,
    log_path: Path | None = None,
    progress_out: TextIO | None = None,
    topic: str = "clickstream",
) -> DemoResult:
    """The demo; log lines to ``log_path`` (a temporary file by default), the live
    progress line to ``progress_out`` (none: no progress line)."""
    dlq = f"{topic}-dlq"
    log_path = log_path or default_log_path()
    garbage = [b"not avro at all", b"\xc3\x01" + b"\x00" * 8 + b"\x02", b""]
    live = _Live(events + len(garbage))
    with ExitStack() as stack:
        bootstrap = stack.enter_context(kafka()).bootstrap_servers
        sim = stack.enter_context(simulator(DEMO_API_KEY, [DEMO_APP_KEY]))
        settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            topics=[topic],
            dlq_topic=dlq,
            group_id=f"connect-signals-demo-{topic}",
            connect_url=sim.graphql_url,
            connect_api_key=DEMO_API_KEY,
            default_app_key=DEMO_APP_KEY,
            session_timeout_ms=6000,
            log_format="console",
            derive_abandonment="both",
            session_gap_s=DEMO_SESSION_GAP_S,
            session_grace_s=DEMO_SESSION_GRACE_S,
        )
        log = stack.enter_context(log_path.open("w", encoding="utf-8"))
        stack.enter_context(logging_to(log, settings))
        if progress_out is not None:
            stack.enter_context(ProgressLine(progress_out, live.counts))
        create_topics(bootstrap, {topic: partitions, dlq: 1})
        generated: list[GeneratedEvent] = list(clickstream(events, seed=seed, pace=DEMO_PACE))
        encoder = EventEncoder(DEFAULT_AVRO_DIR)
        # librdkafka's lines of the demo's own clients go to the log file too
        quiet: dict[str, Any] = {"logger": logging.getLogger("librdkafka")}
        produce_events(bootstrap, topic, live.counting(generated), encoder, extra_config=quiet)
        producer = Producer({"bootstrap.servers": bootstrap, **quiet})
        for value in live.counting(garbage):
            producer.produce(topic, key=b"garbage", value=value)
        producer.flush(10)
        del producer  # gone before the broker stops: no reconnection noise
        live.consumer = SignalConsumer(settings, build_processor(settings))
        watcher = _stop_when_settled(live)
        summary = live.consumer.run()
        watcher.join()
        late = live.consumer.metrics.registry.get_sample_value(
            f"{PREFIX}_sessions_late_events_total"
        )
        derived = derived_report(sim.signals(), int(late or 0))
        invalid = sum(1 for e in generated if e.invalid)
        reasons = Counter(e.info.reason or "?" for e in read_dead_letters(settings, dlq))
        return DemoResult(
            len(generated),
            invalid,
            len(garbage),
            summary,
            sim.stats(),
            reasons,
            log_path,
            derived,
        )


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
    derived = result.derived
    if derived is not None:
        click.echo(
            f"derived    {derived.total} abandonment signals (sessions ended without an order, "
            f"gap {DEMO_SESSION_GAP_S:g} s; {derived.late_events} late events)"
        )
        for kind, n in sorted(derived.by_type.items()):
            click.echo(f"  {kind:<22}{n:>8}")
        if derived.example is not None:
            click.echo(f"  e.g. {_example(derived.example)}")
    if result.log_path is not None:
        click.echo(f"log        {result.log_path}  (the pipeline's own lines)")


def _example(example: dict[str, Any]) -> str:
    """One line: the session, its items and value, the moment it expired."""
    signal = example["signal"]
    content = signal.get("signalContent", {})
    items = ", ".join(
        f"{i.get('itemQuantity', 1)} x {i.get('productId')}"
        for i in content.get("abandonedItems") or []
    )
    value = content.get("abandonedCartValue")
    worth = f" worth {value:g} {content.get('currency')}" if value is not None else ""
    return (
        f"{example['kind']} of session {signal.get('sessionId')}: {items}{worth}, "
        f"at {content.get('signalTimestamp')}"
    )


@click.command()
@click.option("--events", default=5_000, show_default=True, help="How many events to produce.")
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the pipeline's log lines go (default: a new file in the temp directory).",
)
@click.option(
    "--topic",
    default="clickstream",
    show_default=True,
    help="Source topic (created; DLQ: '<topic>-dlq').",
)
def demo(events: int, seed: int, log_file: Path | None, topic: str) -> None:
    """Run a clickstream through the pipeline on an embedded broker and simulator."""
    result = run_demo(events, seed=seed, log_path=log_file, progress_out=sys.stderr, topic=topic)
    _print_report(result)
    expected_dlq = result.planted_invalid + result.planted_garbage
    derived = result.derived.total if result.derived is not None else 0
    ok = (
        result.summary.delivered_total == result.produced - result.planted_invalid + derived
        and sum(result.dead_letter_reasons.values()) == expected_dlq
    )
    verdict = "OK: every valid event delivered, every invalid one dead-lettered" + (
        f", {derived} derived signals delivered" if derived else ""
    )
    click.echo(verdict if ok else "MISMATCH: see the counts above")
    raise SystemExit(0 if ok else 1)
