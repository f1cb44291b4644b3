"""The benchmark's moving parts: broker, schema registry, simulator, backlog, pipelines.

Everything real and on this machine (``devtools.stack``): the embedded Tansu broker
(or the Kafka at ``PIPELINE_KAFKA_BOOTSTRAP_SERVERS``), the Connect simulator in its
own process with server idempotency on (as in production), a local schema registry
over HTTP, and the pipeline as ``connect-pipeline run`` child processes configured by
environment, as it is deployed. Acceptance is read from the simulator's ``/stats`` and ``/signals``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from devtools.clickstream import GeneratedEvent, clickstream
from devtools.producer import EventEncoder, produce_events
from devtools.stack import free_port, kafka, new_topics, simulator, start_pipeline

from benchmarks.registry import LocalRegistry
from pipeline.config import DEFAULT_AVRO_DIR

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-api-key"
APP_KEY = "bench-app-key"
POLL_S = 0.05


@dataclass(frozen=True)
class Backlog:
    topic: str
    partitions: int
    produced: int
    valid: int
    invalid: int
    earlier_edition: int
    produce_s: float


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a live process, from /proc (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU time of a live process and its live children (PIPELINE_WORKERS' workers)."""
    if pid is None:
        return 0.0
    children: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    return cpu_seconds(pid) + sum(tree_cpu_seconds(c) for c in children)


@dataclass
class Acceptance:
    """The simulator's accepted count over time, polled every POLL_S seconds, with the
    CPU seconds used so far by each component (pipeline, simulator, broker)."""

    start: float  # monotonic time the pipeline processes were launched
    expected: int
    samples: list[tuple[float, int]] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)  # one per sample
    duplicates: int = 0

    @property
    def complete(self) -> bool:
        return bool(self.samples) and self.samples[-1][1] >= self.expected

    def index_of(self, count: int) -> int | None:
        for i, (_, accepted) in enumerate(self.samples):
            if accepted >= count:
                return i
        return None

    def time_to(self, count: int) -> float | None:
        """Seconds from start until at least ``count`` signals were accepted."""
        i = self.index_of(count)
        return None if i is None else self.samples[i][0] - self.start

    @property
    def first_s(self) -> float | None:
        return self.time_to(1)

    @property
    def last_s(self) -> float | None:
        return self.time_to(self.expected)

    def _window(self, low: float, high: float) -> tuple[int, int] | None:
        a, b = self.index_of(int(self.expected * low)), self.index_of(int(self.expected * high))
        if a is None or b is None or b <= a:
            return None
        return a, b

    def steady_rate(self, low: float = 0.1, high: float = 0.9) -> float | None:
        """Accepted signals/s between 10% and 90% of the expected count."""
        window = self._window(low, high)
        if window is None:
            return None
        a, b = window
        return (self.samples[b][1] - self.samples[a][1]) / (self.samples[b][0] - self.samples[a][0])

    def cpu_us_per_signal(self, low: float = 0.1, high: float = 0.9) -> dict[str, float]:
        """CPU microseconds per accepted signal, per component, in the steady window."""
        window = self._window(low, high)
        if window is None or len(self.cpu) != len(self.samples):
            return {}
        a, b = window
        signals = self.samples[b][1] - self.samples[a][1]
        return {k: (self.cpu[b][k] - self.cpu[a][k]) * 1e6 / signals for k in self.cpu[b]}


@dataclass
class PipelineProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    peak_rss_bytes: int = 0

    def sample_rss(self) -> None:
        """VmHWM: the kernel's own peak resident set of the process so far."""
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_bytes = max(self.peak_rss_bytes, int(line.split()[1]) * 1024)

    def exited(self) -> bool:
        """Reaps the child if it has exited, keeping its own ru_maxrss (KiB on Linux)."""
        if self.process.returncode is not None:
            return True
        pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        if not pid:
            return False
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self.peak_rss_bytes = max(self.peak_rss_bytes, usage.ru_maxrss * 1024)
        return True

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM (drain, commit, exit); returns the peak RSS over the whole life."""
        self.sample_rss()
        if not self.exited():
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.exited():
                return self.peak_rss_bytes
            time.sleep(0.05)
        self.process.kill()
        self.process.wait(10)
        return self.peak_rss_bytes


class Stack:
    """Broker + registry + simulator for one benchmark session."""

    def __init__(self, workdir: Path | None = None, simulator_args: Sequence[str] = ()) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-"))
        self._simulator_args = list(simulator_args)
        self._exit = contextlib.ExitStack()
        self.bootstrap = ""
        self.registry = LocalRegistry()
        self.sim: Any = None
        self.broker_pid: int | None = None  # None: an external Kafka, CPU not measured
        #: settings for every pipeline run, without the prefix (``--set BATCH_MAX_SIGNALS=500``)
        self.pipeline_settings: dict[str, str] = {}

    def __enter__(self) -> Stack:
        running = self._exit.enter_context(kafka(log_dir=self.workdir))
        self.bootstrap = running.bootstrap_servers
        self.broker_pid = running.broker.pid if running.broker is not None else None
        self.registry.start()
        self._exit.callback(self.registry.stop)
        self.sim = self._exit.enter_context(simulator(API_KEY, [APP_KEY], self._simulator_args))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit.close()

    # --- topics and backlogs ---------------------------------------------------------------

    def create_topic(self, partitions: int, prefix: str = "bench") -> str:
        topic: str = new_topics(self.bootstrap, prefix, partitions)[0]  # and <topic>-dlq
        return topic

    def encoder(self) -> EventEncoder:
        """Confluent framing against the local registry: every reader can resolve it."""
        return EventEncoder(DEFAULT_AVRO_DIR, registry=self.registry)

    def produce_backlog(
        self, events: int, *, partitions: int = 6, seed: int = 7, invalid_ratio: float = 0.03
    ) -> Backlog:
        """A realistic mix (some invalid, some earlier-edition) written before any run."""
        topic = self.create_topic(partitions)
        counts = {"valid": 0, "invalid": 0, "v1": 0}

        def counted() -> Iterator[GeneratedEvent]:
            for event in clickstream(events, seed=seed, invalid_ratio=invalid_ratio):
                counts["invalid" if event.invalid else "valid"] += 1
                counts["v1"] += event.edition == 1
                yield event

        start = time.monotonic()
        produced = produce_events(
            self.bootstrap,
            topic,
            counted(),
            self.encoder(),
            extra_config={"linger.ms": 50, "batch.num.messages": 10_000},
        )
        return Backlog(
            topic,
            partitions,
            produced,
            counts["valid"],
            counts["invalid"],
            counts["v1"],
            time.monotonic() - start,
        )

    # --- pipelines -------------------------------------------------------------------------

    def pipeline_env(self, topic: str, group: str, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        settings = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TOPICS": topic,
            "DLQ_TOPIC": f"{topic}-dlq",
            "GROUP_ID": group,
            "CONNECT_URL": self.sim.graphql_url,
            "CONNECT_API_KEY": API_KEY,
            "DEFAULT_APP_KEY": APP_KEY,
            "SCHEMA_REGISTRY_URL": self.registry.url,
            # librdkafka's default (45 s) makes every group join wait; 6 s is enough here
            "SESSION_TIMEOUT_MS": "6000",
            "HTTP_PORT": str(free_port()),
        }
        settings.update(self.pipeline_settings)
        settings.update(overrides)
        env.update({f"PIPELINE_{k}": v for k, v in settings.items()})
        return env

    def start_pipeline(self, topic: str, group: str, **overrides: str) -> PipelineProcess:
        replica = uuid.uuid4().hex[:4]
        log_path = self.workdir / f"pipeline-{group}-{replica}.log"
        # replicas on one host need their own transactional id (the default is per host)
        overrides.setdefault("TRANSACTIONAL_ID", f"{group}-{replica}")
        env = self.pipeline_env(topic, group, **overrides)
        process = start_pipeline(env, log_path, cwd=REPO)
        return PipelineProcess(process, log_path)

    def wait_accepted(
        self,
        expected: int,
        start: float,
        processes: Sequence[PipelineProcess],
        timeout_s: float,
    ) -> Acceptance:
        """Poll the simulator until ``expected`` signals are accepted (or time runs out)."""
        trace = Acceptance(start, expected)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = self.sim.stats()
            now = time.monotonic()
            trace.samples.append((now, int(stats["accepted"])))
            trace.cpu.append(
                {
                    "pipeline": sum(tree_cpu_seconds(p.process.pid) for p in processes),
                    "simulator": cpu_seconds(self.sim.pid),
                    "broker": cpu_seconds(self.broker_pid),
                }
            )
            trace.duplicates = int(stats.get("duplicates", 0))
            if stats["accepted"] >= expected:
                break
            for p in processes:
                p.sample_rss()
                if p.exited():
                    raise RuntimeError(
                        f"pipeline exited {p.process.returncode}: "
                        + p.log_path.read_text(errors="replace")[-2000:]
                    )
            time.sleep(POLL_S)
        return trace


def now_utc() -> datetime:
    return datetime.now(UTC)
