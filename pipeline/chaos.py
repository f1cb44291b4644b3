"""``connect-pipeline chaos``: a clickstream through the pipeline while things break.

N events (a few percent invalid, some earlier-edition) go through a real broker and
the Connect simulator while ``connect-pipeline run`` processes are killed with SIGKILL
and restarted, a second replica joins and leaves the group, the broker is frozen
(SIGSTOP/SIGCONT) and the simulator answers with 5xx, 429 bursts, latency, timeouts
and dropped connections. The simulator runs with server-side idempotency off, so every
duplicate the pipeline sends is counted. Every random choice (event mix, when each
action happens, which replica dies, the simulator's faults) comes from ``--seed``.

The run fails (exit 1) when a valid event was never accepted, when the dead-letter
topic does not hold exactly the invalid events, when a replica crashed or hung, or
when the duplicates exceed the stated bound.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import click
import httpx
import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from pipeline.clickstream import GeneratedEvent, clickstream
from pipeline.config import DEFAULT_AVRO_DIR, Settings
from pipeline.producer import EventEncoder

APP_KEY: Final = "chaos-app-key"
API_KEY: Final = "chaos-api-key"
REPO: Final = Path(__file__).resolve().parent.parent
MIN_UPTIME_S: Final = 8.0
SECRET_SETTINGS: Final = ("kafka_sasl_password", "connect_api_key", "default_app_key")

ActionKind = Literal["kill", "join", "leave", "pause", "burst"]


# --- the plan: pure, from the seed ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    events: int = 100_000
    seed: int = 1
    kills: int = 3
    pause_s: float = 10.0  # 0: no broker pause
    rebalance: bool = True  # a second replica joins and later leaves
    partitions: int = 6
    invalid_ratio: float = 0.03
    v1_ratio: float = 0.05
    before_ratio: float = 0.2  # produced before the consumers start; the rest during
    produce_rate: float = 1_000.0  # events/s for the part produced during the run
    #: Membership changes (kill, join, leave) wait this long after the previous one: the
    #: embedded broker never expires a group leader killed mid-rebalance (README).
    settle_s: float = 12.0
    faults: bool = True
    timeout_s: float = 900.0  # give up waiting for the stream to drain
    settings: dict[str, Any] = field(default_factory=dict)  # consumer overrides


@dataclass(frozen=True, slots=True)
class Action:
    """Something done to the system once ``at`` of the valid events are accepted."""

    at: float
    kind: ActionKind
    pick: int = 0  # which live replica a kill hits (index modulo the live ones)
    delay_s: float = 0.0  # kill: extra wait after the threshold; restart: wait before


def plan_actions(config: ChaosConfig) -> list[Action]:
    """The run's script, in firing order; the same seed gives the same script."""
    rng = random.Random(f"chaos-plan-{config.seed}")
    actions = [
        Action(rng.uniform(0.05, 0.9), "kill", rng.randrange(1 << 16), rng.uniform(0, 0.5))
        for _ in range(config.kills)
    ]
    if config.rebalance:
        join = rng.uniform(0.1, 0.35)
        actions.append(Action(join, "join"))
        actions.append(Action(rng.uniform(join + 0.2, 0.85), "leave"))
    if config.pause_s > 0:
        actions.append(Action(rng.uniform(0.3, 0.7), "pause"))
    if config.faults:
        actions.extend(Action(rng.uniform(0.1, 0.9), "burst") for _ in range(2))
    return sorted(actions, key=lambda a: a.at)


def simulator_faults(seed: int, *, burst: int = 0) -> dict[str, Any]:
    """The simulator's fault settings: 5xx, 429 (bursts), latency, timeouts, drops.

    Timeouts and drops after processing make Connect accept a batch whose answer the
    client never sees: the retry sends it again (counted apart, see ``retried``).
    """
    wanted: dict[str, Any] = {
        "seed": seed,
        "error_rate": 0.05,
        "rate_limit_rate": 0.01,
        "rate_limit_burst": burst,
        "retry_after_s": 0.5,
        "latency_ms": 5,
        "latency_jitter_ms": 20,
        "drop_connection_rate": 0.02,
        "drop_after_processing_rate": 0.002,
        "timeout_rate": 0.002,
        "timeout_s": 3.0,
    }
    return {k: v for k, v in wanted.items() if k in _simulator_fault_names()}


def _simulator_fault_names() -> set[str]:
    try:
        from connect_sim.faults import Faults  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        from connect_sim.app import Faults  # type: ignore[attr-defined, no-redef, unused-ignore]
    return {f.name for f in dataclasses.fields(Faults)}


# --- the duplicate bound ---------------------------------------------------------------


def duplicate_bound(kills: int, settings: Settings, batches_per_commit_interval: int) -> int:
    """Signals a run with ``kills`` SIGKILLs may re-send (local stand-in).

    TO BE REPLACED by ``pipeline.ledger.duplicate_bound`` once the delivery ledger
    lands. Without a ledger, a kill re-sends what was in flight plus what was settled
    since the last offset commit: ``kills * (max_in_flight_batches + batches settled per
    commit interval) * batch_max_signals``. The settle rate is not a setting, so the
    caller passes the one measured in the run (:func:`max_calls_in_window`).
    """
    per_kill = settings.max_in_flight_batches + batches_per_commit_interval
    return kills * per_kill * settings.batch_max_signals


def ledger_bound(kills: int, settings: Settings) -> int | None:
    """The delivery ledger's bound for ``kills`` crashes, when ``pipeline.ledger`` exists.

    The ledger states it per crash (``duplicate_bound(settings)``); a ``(kills,
    settings)`` form is accepted too. Any other shape is reported as unknown.
    """
    try:
        from pipeline import ledger  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        return None
    bound = getattr(ledger, "duplicate_bound", None)
    if bound is None:
        return None
    try:
        if "kills" in inspect.signature(bound).parameters:
            return int(bound(kills, settings))
        return kills * int(bound(settings))
    except (TypeError, ValueError):
        return None


def retry_allowance(simulator_stats: dict[str, Any], settings: Settings) -> int:
    """Duplicates a correct client must send without any crash.

    A call the simulator served after the client timed out, or whose connection it
    dropped after recording the signals, is retried: with server-side idempotency off
    (as here) its signals are accepted twice. At most one batch per such call.
    """
    faults = simulator_stats.get("faults", {})
    served_unseen = int(faults.get("timeout", 0)) + int(faults.get("drop_after", 0))
    return served_unseen * settings.batch_max_signals


def max_calls_in_window(call_times: Sequence[float], window_s: float) -> int:
    """The most accepted calls in any ``window_s``-long stretch (times sorted or not)."""
    times = sorted(call_times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


# --- the report: pure ----------------------------------------------------------------


@dataclass(slots=True)
class ChaosReport:
    seed: int
    events: int
    produced: int = 0
    valid: int = 0
    invalid: int = 0
    earlier_edition: int = 0
    accepted_rows: int = 0
    accepted_unique: int = 0
    duplicates: int = 0
    resent: int = 0  # of which in a new batch (a re-read after a kill or a lost commit)
    retried: int = 0  # of which in the same batch (a retry, or an identical re-read batch)
    lost: int = 0
    unexpected_accepted: int = 0  # keys that are no valid event's (invalid accepted?)
    dead_lettered: int = 0  # distinct invalid events found on the dead-letter topic
    dead_letter_records: int = 0  # records read (a re-read record is written again)
    dead_lettered_wrongly: int = 0  # dead-letter records that are not invalid events
    kills: int = 0
    joins: int = 0
    leaves: int = 0
    pause_s: float = 0.0
    crashes: list[str] = field(default_factory=list)
    exits: dict[str, list[int]] = field(default_factory=dict)  # per replica, in order
    batches_per_commit_interval: int = 0
    bound: int = 0
    ledger_bound: int | None = None
    retry_allowance: int = 0  # calls served after the client gave up x batch size
    simulator: dict[str, Any] = field(default_factory=dict)
    drained: bool = False
    duration_s: float = 0.0
    lost_sample: list[str] = field(default_factory=list)
    #: partitions the group had not committed to the end when the run stopped waiting
    uncommitted: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def allowed_duplicates(self) -> int:
        """The crash bound (the ledger's when it exists) plus the served-then-lost calls."""
        crash = self.ledger_bound if self.ledger_bound is not None else self.bound
        return crash + self.retry_allowance

    def failures(self) -> list[str]:
        governing = self.allowed_duplicates
        problems = []
        if self.produced != self.events:
            problems.append(f"only {self.produced} of {self.events} events were produced")
        if self.lost:
            problems.append(f"{self.lost} valid events lost, e.g. {self.lost_sample[:5]}")
        if self.unexpected_accepted:
            problems.append(f"{self.unexpected_accepted} accepted signals are no valid event")
        if self.dead_lettered != self.invalid or self.dead_lettered_wrongly:
            problems.append(
                f"dead-lettered {self.dead_lettered} of {self.invalid} invalid events "
                f"(+{self.dead_lettered_wrongly} that are not invalid)"
            )
        if self.duplicates > governing:
            problems.append(f"{self.duplicates} duplicates exceed the bound {governing}")
        problems.extend(f"replica crashed or hung: {c}" for c in self.crashes)
        if not self.drained:
            behind = ", ".join(
                f"[{p}] committed {c} of {e}" for p, (c, e) in sorted(self.uncommitted.items())
            )
            problems.append(f"the stream did not drain before the timeout: {behind}")
        return problems

    def lines(self) -> list[str]:
        ledger = "n/a (no pipeline.ledger yet)" if self.ledger_bound is None else self.ledger_bound
        faults = self.simulator.get("faults", {})
        rows = [
            ("seed", self.seed),
            ("events produced", f"{self.produced} of {self.events}"),
            ("  valid / invalid", f"{self.valid} / {self.invalid}"),
            ("  earlier-edition", self.earlier_edition),
            ("kills (SIGKILL)", self.kills),
            ("replica joins / leaves", f"{self.joins} / {self.leaves}"),
            ("broker paused", f"{self.pause_s:g} s"),
            ("replica exit statuses", "; ".join(f"{k} {v}" for k, v in self.exits.items())),
            ("simulator faults", ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))),
            ("accepted (all calls)", self.accepted_rows),
            ("accepted unique", self.accepted_unique),
            ("duplicates", f"{self.duplicates} ({self.retried} same batch, {self.resent} new)"),
            ("lost", self.lost),
            ("accepted, not valid", self.unexpected_accepted),
            ("dead-lettered", f"{self.dead_lettered} ({self.dead_letter_records} records)"),
            ("dead-lettered wrongly", self.dead_lettered_wrongly),
            ("calls per commit interval", f"{self.batches_per_commit_interval} (max measured)"),
            ("duplicate bound (local)", self.bound),
            ("duplicate bound (ledger)", ledger),
            ("  + served, answer lost", self.retry_allowance),
            ("  = duplicates allowed", self.allowed_duplicates),
            ("duration", f"{self.duration_s:.1f} s"),
        ]
        return [f"{name:<27}{value}" for name, value in rows]


@dataclass(frozen=True, slots=True)
class Tally:
    rows: int  # accepted signals, every acceptance counted
    unique: int  # distinct valid events accepted
    resent: int  # duplicates in a new batch (a re-read: a kill, a lost commit)
    retried: int  # in the same batch key: a retried call Connect had served, or a
    # re-read that formed the identical batch again (the key hashes its signals)
    unexpected: int  # accepted keys that are no valid event
    lost: list[str]  # valid events never accepted

    @property
    def duplicates(self) -> int:
        return self.resent + self.retried


def tally_accepted(rows: Sequence[tuple[str, str | None]], valid_ids: set[str]) -> Tally:
    """Classify accepted (signal key, batch key) rows against the valid event ids."""
    seen: set[str] = set()
    calls: set[tuple[str, str | None]] = set()
    resent = retried = unexpected = 0
    for key, batch_key in rows:
        if key not in valid_ids:
            unexpected += 1
        elif key in seen:
            if (key, batch_key) in calls:
                retried += 1
            else:
                resent += 1
        seen.add(key)
        calls.add((key, batch_key))
    lost = sorted(valid_ids - seen)
    return Tally(len(rows), len(seen & valid_ids), resent, retried, unexpected, lost)


# --- processes ---------------------------------------------------------------------------


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that configures ``connect-pipeline run`` like ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if name in SECRET_SETTINGS:
            value = getattr(settings, name).get_secret_value()
        env[f"PIPELINE_{name.upper()}"] = (
            json.dumps(value) if isinstance(value, list | dict) else str(value)
        )
    return env


class Replica:
    """One ``connect-pipeline run`` process that can be killed and restarted."""

    def __init__(self, name: str, settings: Settings, log_dir: Path) -> None:
        self.name = name
        self._env = {**settings_env(settings), "PYTHONUNBUFFERED": "1"}  # logs survive a kill
        if "transactional_id" in Settings.model_fields:
            # Two replicas on one host: the default id (group + host name) would make
            # them fence each other; a restart keeps its id and fences its old self.
            self._env["PIPELINE_TRANSACTIONAL_ID"] = f"{settings.group_id}-{name}"
        self._log_dir = log_dir
        self._starts = 0
        self._stopped = False  # ended on purpose: not a crash
        self.process: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []  # each incarnation's exit status (-9: our SIGKILL)
        self.started_at = 0.0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self._log_dir / f"replica-{self.name}-{self._starts}.log"

    def record_exit(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            self.exits.append(self.process.returncode)

    def start(self) -> None:
        self.record_exit()
        self._starts += 1
        self.started_at = time.monotonic()
        self._stopped = False
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "run"],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )

    def kill(self) -> None:
        self._stopped = True
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM and wait; the exit status, or None if it hung (then it is killed)."""
        self._stopped = True
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        # A SIGTERM before the interpreter has installed its handler just kills it:
        # give a fresh process time to come up (a pod gets the same grace).
        time.sleep(max(0.0, self.started_at + MIN_UPTIME_S - time.monotonic()))
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def unexpected_exit(self) -> str | None:
        """A description when the process ended by itself."""
        if self._stopped or self.process is None or self.process.poll() is None:
            return None
        tail = self.log_path.read_text(errors="replace")[-600:]
        return f"{self.name} exited {self.process.returncode} on its own: {tail}"


class EventFeed:
    """Produces the events: a first part at once, the rest at a steady rate meanwhile."""

    def __init__(self, bootstrap: str, topic: str, events: Sequence[GeneratedEvent]) -> None:
        self._topic = topic
        self._events = events
        self._encoder = EventEncoder(DEFAULT_AVRO_DIR)
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20}
        )
        self.acknowledged = 0
        self.end_offsets: dict[int, int] = {}  # partition -> one past the last written
        self.failures: list[str] = []
        self.invalid_values: set[bytes] = set()
        self._thread: threading.Thread | None = None

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is None:
            self.acknowledged += 1
            partition, end = message.partition(), message.offset() + 1
            self.end_offsets[partition] = max(end, self.end_offsets.get(partition, 0))
        else:
            self.failures.append(str(error))

    def _produce(self, events: Sequence[GeneratedEvent], rate: float | None) -> None:
        started = time.monotonic()
        for n, event in enumerate(events):
            value = self._encoder.encode(event)
            if event.invalid:
                self.invalid_values.add(value)
            key = str(event.record["sessionId"]).encode()
            while True:
                try:
                    self._producer.produce(
                        self._topic, key=key, value=value, on_delivery=self._on_delivery
                    )
                    break
                except BufferError:
                    self._producer.poll(0.1)
            if n % 200 == 0:
                self._producer.poll(0)
                if rate:
                    ahead = started + n / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        self._producer.flush(300)

    def produce_first(self, count: int) -> None:
        self._produce(self._events[:count], None)

    def start_rest(self, count_done: int, rate: float) -> None:
        rest = self._events[count_done:]
        self._thread = threading.Thread(target=self._produce, args=(rest, rate), daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, n, 1) for name, n in topics.items()], operation_timeout=30
    )
    for future in futures.values():
        future.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=5).topics
        if all(t in metadata and len(metadata[t].partitions) == n for t, n in topics.items()):
            return
        time.sleep(0.2)


def group_offsets(
    bootstrap: str, group_id: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """The group's committed offset per partition (negative: none yet)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    try:
        wanted = [TopicPartition(topic, p) for p in partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=10)}
    except KafkaException:
        return {}
    finally:
        consumer.close()


def read_dead_letters(
    bootstrap: str, topic: str, expected: set[bytes], timeout_s: float
) -> list[bytes]:
    """Every record value on the dead-letter topic, read to the end.

    Committed records only. Counted by reading, never by watermarks (the embedded
    broker's undercount): read until every expected value was seen or the time is
    up, then a little longer so that extra records show.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-dlq-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            # A dead letter written in a transaction that was then aborted (a kill) is
            # void: only committed ones count, or a lost dead letter could hide.
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    missing = set(expected)
    deadline = time.monotonic() + timeout_s
    linger_until: float | None = None
    try:
        while time.monotonic() < (linger_until or deadline):
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None:
                    value = message.value() or b""
                    values.append(value)
                    missing.discard(value)
            if not missing and linger_until is None:
                linger_until = time.monotonic() + 2.0
    finally:
        consumer.close()
    return values


@contextmanager
def broker(bootstrap: str | None, log_dir: Path) -> Iterator[tuple[str, Any]]:
    """The given broker (no pause possible) or an embedded one we own."""
    if bootstrap:
        yield bootstrap, None
        return
    from pipeline.embedded_broker import EmbeddedBroker

    with EmbeddedBroker(log_dir=log_dir) as embedded:
        yield embedded.bootstrap_servers, embedded


def accepted_rows_and_call_times(
    base_url: str,
) -> tuple[list[tuple[str, str | None]], list[float]]:
    """From the simulator's dump: (signal key, batch key) per acceptance, call times."""
    rows: list[tuple[str, str | None]] = []
    calls: set[tuple[str | None, float]] = set()
    with (
        httpx.Client(timeout=120) as http,
        http.stream("GET", f"{base_url}/signals") as response,
    ):
        for line in response.iter_lines():
            if line.strip():
                row = orjson.loads(line)
                rows.append((str(row["key"]), row.get("batchKey")))
                calls.add((row.get("batchKey"), float(row["receivedAt"])))
    return rows, [t for _, t in calls]


# --- the run ---------------------------------------------------------------------------


def consumer_settings(
    bootstrap: str, topic: str, dlq: str, url: str, overrides: dict[str, Any]
) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "topics": [topic],
        "dlq_topic": dlq,
        "group_id": f"chaos-{topic}",
        "connect_url": url,
        "connect_api_key": API_KEY,
        "default_app_key": APP_KEY,
        "session_timeout_ms": 6000,  # group joins in ~3 s on the embedded broker
        "request_timeout_s": 2.0,  # the simulator's injected hangs last 3 s
        "retry_initial_backoff_ms": 20,
        "retry_max_backoff_ms": 1000,
        "drain_timeout_s": 10,
        "http_port": 0,
    }
    values.update(overrides)
    return Settings(**values)


class ChaosRun:
    """Runs one plan against live processes and builds the report."""

    def __init__(
        self,
        config: ChaosConfig,
        *,
        bootstrap: str | None = None,
        log_dir: Path | None = None,
        echo: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
        self.echo = echo
        self.report = ChaosReport(config.seed, config.events)
        self.stop_timeout_s = 30.0
        self.bootstrap_servers, self.group_id, self.topic = "", "", ""
        self._last_change = 0.0

    def run(self) -> ChaosReport:
        from connect_sim.testing import run_simulator

        started = time.monotonic()
        config, report = self.config, self.report
        events = list(
            clickstream(
                config.events,
                seed=config.seed,
                invalid_ratio=config.invalid_ratio,
                v1_ratio=config.v1_ratio,
            )
        )
        valid_ids = {e.event_id for e in events if not e.invalid}
        report.valid, report.invalid = len(valid_ids), len(events) - len(valid_ids)
        report.earlier_edition = sum(1 for e in events if e.edition == 1)
        sim_args = ["--no-idempotency"]  # let every duplicate the pipeline sends show
        with ExitStack() as stack:
            bootstrap, embedded = stack.enter_context(broker(self.bootstrap, self.log_dir))
            sim = stack.enter_context(
                run_simulator(api_key=API_KEY, app_keys=[APP_KEY], extra_args=sim_args)
            )
            if config.faults:
                sim.set_faults(**simulator_faults(config.seed))
            suffix = f"{config.seed}-{uuid.uuid4().hex[:6]}"
            topic, dlq = f"chaos-{suffix}", f"chaos-{suffix}-dlq"
            create_topics(bootstrap, {topic: config.partitions, dlq: 1})
            settings = consumer_settings(bootstrap, topic, dlq, sim.graphql_url, config.settings)
            self.bootstrap_servers, self.group_id, self.topic = bootstrap, settings.group_id, topic
            self.stop_timeout_s = settings.drain_timeout_s + 20
            replicas = [Replica("A", settings, self.log_dir), Replica("B", settings, self.log_dir)]
            for replica in replicas:
                stack.callback(replica.kill)
            feed = EventFeed(bootstrap, topic, events)
            first = int(len(events) * config.before_ratio)
            feed.produce_first(first)
            self.echo(f"produced {first} events before the consumers; logs in {self.log_dir}")
            replicas[0].start()
            feed.start_rest(first, config.produce_rate)

            def progress() -> float:
                return int(sim.stats()["unique_keys"]) / max(1, len(valid_ids))

            self._play(plan_actions(config), replicas, embedded, sim, progress, started)
            report.drained = self._wait_drained(replicas, feed, progress, started)
            for replica in replicas:
                if replica.alive:
                    self._stop(replica, "at the end")
                replica.record_exit()
                report.exits[replica.name] = replica.exits
            feed.join(30)
            report.produced = feed.acknowledged
            rows, call_times = accepted_rows_and_call_times(sim.base_url)
            report.simulator = sim.stats()
            tally = tally_accepted(rows, valid_ids)
            report.accepted_rows, report.accepted_unique = tally.rows, tally.unique
            report.duplicates, report.unexpected_accepted = tally.duplicates, tally.unexpected
            report.resent, report.retried = tally.resent, tally.retried
            report.lost, report.lost_sample = len(tally.lost), tally.lost[:20]
            dead = read_dead_letters(bootstrap, dlq, feed.invalid_values, timeout_s=60)
            report.dead_letter_records = len(dead)
            report.dead_lettered = len(set(dead) & feed.invalid_values)
            report.dead_lettered_wrongly = len(set(dead) - feed.invalid_values)
            window = settings.commit_interval_ms / 1000
            report.batches_per_commit_interval = max_calls_in_window(call_times, window)
            report.bound = duplicate_bound(
                report.kills, settings, report.batches_per_commit_interval
            )
            report.ledger_bound = ledger_bound(report.kills, settings)
            report.retry_allowance = retry_allowance(report.simulator, settings)
        report.duration_s = time.monotonic() - started
        return report

    def _play(
        self,
        actions: Sequence[Action],
        replicas: list[Replica],
        embedded: Any,
        sim: Any,
        progress: Callable[[], float],
        started: float,
    ) -> None:
        rng = random.Random(f"chaos-restart-{self.config.seed}")
        deadline = started + self.config.timeout_s
        self._last_change = time.monotonic()  # replica A has just started
        for action in actions:
            settled = action.kind not in ("kill", "join", "leave")
            while progress() < action.at or not settled:
                self._check_crashes(replicas)
                if time.monotonic() > deadline:
                    return
                settled = settled or time.monotonic() - self._last_change >= self.config.settle_s
                time.sleep(0.1)
            time.sleep(action.delay_s)
            moment = f"{time.monotonic() - started:6.1f} s, {progress():4.0%} accepted"
            self._do(action, moment, replicas, embedded, sim, rng)
            if action.kind != "burst":
                self._last_change = time.monotonic()

    def _do(
        self,
        action: Action,
        moment: str,
        replicas: list[Replica],
        embedded: Any,
        sim: Any,
        rng: random.Random,
    ) -> None:
        report, a, b = self.report, replicas[0], replicas[1]
        if action.kind == "kill":
            live = [r for r in replicas if r.alive] or [a]
            victim = live[action.pick % len(live)]
            victim.kill()
            report.kills += 1
            time.sleep(rng.uniform(0, 1.0))
            victim.start()
            self.echo(f"{moment}: SIGKILL replica {victim.name}, restarted")
        elif action.kind == "join":
            b.start()
            report.joins += 1
            self.echo(f"{moment}: replica B joins")
        elif action.kind == "leave":
            if b.alive:
                self._stop(b, "when leaving")
                report.leaves += 1
                self.echo(f"{moment}: replica B leaves")
        elif action.kind == "pause":
            if embedded is None:
                self.echo(f"{moment}: broker pause skipped (not our broker)")
                return
            embedded.pause()
            time.sleep(self.config.pause_s)
            embedded.resume()
            report.pause_s += self.config.pause_s
            self.echo(f"{moment}: broker paused for {self.config.pause_s:g} s")
        elif action.kind == "burst":
            burst = rng.randrange(10, 40)
            sim.set_faults(**simulator_faults(rng.randrange(1 << 30), burst=burst))
            self.echo(f"{moment}: simulator answers the next {burst} calls with 429")

    def _committed_to_end(self, end_offsets: dict[int, int]) -> bool:
        """The group committed every partition to its end: every record is finished.

        Ends come from the producer's acknowledgements, not from watermarks (the
        embedded broker's undercount). Until then a replica may still owe dead letters.
        """
        committed = group_offsets(self.bootstrap_servers, self.group_id, self.topic, end_offsets)
        self.report.uncommitted = {
            p: (committed.get(p, -1), end)
            for p, end in end_offsets.items()
            if committed.get(p, -1) < end
        }
        return not self.report.uncommitted

    def _stop(self, replica: Replica, when: str) -> None:
        """SIGTERM must drain, commit and exit 0 in time; anything else is a failure."""
        code = replica.stop(self.stop_timeout_s)
        if code is None:
            self.report.crashes.append(f"{replica.name} hung on SIGTERM {when}")
        elif code != 0:
            tail = replica.log_path.read_text(errors="replace")[-600:]
            self.report.crashes.append(f"{replica.name} exited {code} on SIGTERM {when}: {tail}")

    def _check_crashes(self, replicas: list[Replica]) -> None:
        for replica in replicas:
            crash = replica.unexpected_exit()
            if crash is not None and replica.process is not None:
                self.report.crashes.append(crash)
                replica.process = None  # reported once
                replica.start()

    def _wait_drained(
        self,
        replicas: list[Replica],
        feed: EventFeed,
        progress: Callable[[], float],
        started: float,
    ) -> bool:
        deadline = started + self.config.timeout_s
        while time.monotonic() < deadline:
            self._check_crashes(replicas)
            if feed.done and progress() >= 1.0 and self._committed_to_end(feed.end_offsets):
                return True
            time.sleep(0.2)
        return False


# --- the command ---------------------------------------------------------------------------


@click.command()
@click.option("--events", default=100_000, show_default=True, help="Events to produce.")
@click.option("--seed", default=1, show_default=True, help="Every random choice follows it.")
@click.option("--kills", default=3, show_default=True, help="SIGKILLs of a consumer.")
@click.option("--pause", "pause_s", default=10.0, show_default=True, help="Broker freeze (s).")
@click.option("--rebalance/--no-rebalance", default=True, show_default=True)
@click.option("--faults/--no-faults", default=True, show_default=True)
@click.option("--partitions", default=6, show_default=True)
@click.option("--invalid-ratio", default=0.03, show_default=True)
@click.option("--produce-rate", default=1_000.0, show_default=True, help="Events/s, live part.")
@click.option(
    "--settle", "settle_s", default=12.0, show_default=True, help="Seconds between kills/joins."
)
@click.option("--timeout", "timeout_s", default=900.0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def chaos(
    events: int,
    seed: int,
    kills: int,
    pause_s: float,
    rebalance: bool,
    faults: bool,
    partitions: int,
    invalid_ratio: float,
    produce_rate: float,
    settle_s: float,
    timeout_s: float,
    json_path: str | None,
) -> None:
    """Kill, rebalance, freeze and fault the pipeline mid-stream; check nothing was lost.

    Uses PIPELINE_KAFKA_BOOTSTRAP_SERVERS when set (the broker pause is then skipped),
    otherwise an embedded broker. Exits 1 on loss, a dead-letter mismatch, a crash or
    hang, or more duplicates than the bound.
    """
    config = ChaosConfig(
        events=events,
        seed=seed,
        kills=kills,
        pause_s=pause_s,
        rebalance=rebalance,
        partitions=partitions,
        invalid_ratio=invalid_ratio,
        produce_rate=produce_rate,
        settle_s=settle_s,
        faults=faults,
        timeout_s=timeout_s,
    )
    bootstrap = os.environ.get("PIPELINE_KAFKA_BOOTSTRAP_SERVERS") or None
    report = ChaosRun(config, bootstrap=bootstrap, echo=click.echo).run()
    click.echo("")
    for line in report.lines():
        click.echo(line)
    problems = report.failures()
    if json_path:
        Path(json_path).write_text(json.dumps({**asdict(report), "failures": problems}, indent=2))
    for problem in problems:
        click.echo(f"FAIL: {problem}")
    if not problems:
        click.echo("OK: nothing lost, every invalid event dead-lettered, duplicates in bound")
    raise SystemExit(1 if problems else 0)
