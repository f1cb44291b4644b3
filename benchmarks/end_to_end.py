"""End to end from a backlog: events/s, peak RSS, and scaling over consumer processes.

A backlog is produced to the broker first (several partitions). Each run resets the
simulator, starts N ``connect-pipeline run`` processes in a fresh consumer group, and
stops the clock when the simulator has accepted every valid event of the backlog.
Timings count from the launch of the processes (interpreter start and group join
included); the steady rate counts from 10% to 90% of the acceptances.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from benchmarks.stack import Backlog, Stack


@dataclass(frozen=True)
class RunResult:
    consumers: int
    events: int  # the backlog: valid and invalid records
    accepted: int
    duplicates: int
    first_s: float  # launch -> first acceptance (start-up and group join)
    total_s: float  # launch -> last acceptance
    steady_rate: float  # accepted/s between 10% and 90%
    peak_rss_bytes: tuple[int, ...]  # one per process
    cpu_us: dict[str, float]  # CPU µs per accepted signal in the steady window, by component

    @property
    def rate(self) -> float:
        """Backlog events per second, from launch to the last acceptance."""
        return self.events / self.total_s


def run_backlog(
    stack: Stack,
    backlog: Backlog,
    *,
    consumers: int = 1,
    workers: int = 1,
    timeout_s: float = 600,
) -> RunResult:
    """``consumers`` separate processes, each with PIPELINE_WORKERS=``workers``."""
    stack.sim.reset()
    group = f"bench-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    processes = [
        stack.start_pipeline(backlog.topic, group, WORKERS=str(workers)) for _ in range(consumers)
    ]
    try:
        trace = stack.wait_accepted(backlog.valid, start, processes, timeout_s)
    finally:
        peaks = tuple(p.stop() for p in processes)
    if not trace.complete or trace.last_s is None or trace.first_s is None:
        got = trace.samples[-1][1] if trace.samples else 0
        raise RuntimeError(f"only {got} of {backlog.valid} accepted within {timeout_s:.0f} s")
    return RunResult(
        consumers,
        backlog.produced,
        trace.samples[-1][1],
        trace.duplicates,
        trace.first_s,
        trace.last_s,
        trace.steady_rate() or 0.0,
        peaks,
        trace.cpu_us_per_signal(),
    )


@dataclass(frozen=True)
class ReferenceResult:
    events: int  # consumed by the reference
    accepted: int  # accepted by the simulator
    total_s: float  # launch -> exit (after its last call)
    steady_rate: float  # accepted/s between 10% and 90% of its acceptances
    peak_rss_bytes: int

    @property
    def rate(self) -> float:
        return self.events / self.total_s


def run_reference(
    stack: Stack, backlog: Backlog, *, events: int, timeout_s: float = 600
) -> ReferenceResult:
    """``benchmarks.reference`` in its own process over the first ``events`` of the backlog."""
    import json
    import subprocess
    import sys

    from benchmarks.stack import API_KEY, APP_KEY, REPO, Acceptance, PipelineProcess

    stack.sim.reset()
    log_path = stack.workdir / f"reference-{uuid.uuid4().hex[:4]}.log"
    command = [
        sys.executable,
        "-m",
        "benchmarks.reference",
        f"--bootstrap={stack.bootstrap}",
        f"--topic={backlog.topic}",
        f"--group=reference-{uuid.uuid4().hex[:8]}",
        f"--registry={stack.registry.url}",
        f"--url={stack.sim.graphql_url}",
        f"--api-key={API_KEY}",
        f"--app-key={APP_KEY}",
        f"--events={min(events, backlog.produced)}",
    ]
    start = time.monotonic()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log_path.open("ab"), cwd=REPO
    )
    child = PipelineProcess(process, log_path)
    samples: list[tuple[float, int]] = []
    deadline = start + timeout_s
    while not child.exited() and time.monotonic() < deadline:
        samples.append((time.monotonic(), int(stack.sim.stats()["accepted"])))
        child.sample_rss()
        time.sleep(0.05)
    assert process.stdout is not None
    output = process.stdout.read().decode()
    peak = child.stop()
    if process.returncode != 0 or not output.strip():
        raise RuntimeError(f"reference failed: {log_path.read_text(errors='replace')[-2000:]}")
    report = json.loads(output.strip().splitlines()[-1])
    samples.append((time.monotonic(), int(stack.sim.stats()["accepted"])))
    trace = Acceptance(start, samples[-1][1], samples)  # no CPU samples: rates only
    return ReferenceResult(
        report["events"],
        report["accepted"],
        time.monotonic() - start,
        trace.steady_rate() or 0.0,
        peak,
    )
