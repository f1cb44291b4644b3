"""The Connect simulator's own capacity: accepted signals/s under concurrent batches.

    python -m benchmarks.sim_capacity [--duration 5] [--runs 3] [--connections 8]
                                      [--batch 250] [--sim-arg=--no-idempotency ...]

The simulator runs as in the tests and the demo (``connect_sim.testing``: its own
process, uvicorn with uvloop and httptools). The load generator sends the pipeline's
own requests: realistic signals (``devtools.clickstream`` mapped by
``pipeline.signals.mapping``), the variables-form document, ``Idempotency-Key`` and
``Signal-Idempotency-Keys`` headers, a new batch key per request, from several
concurrent keep-alive connections for a fixed duration (plain asyncio HTTP/1.1
with pre-built requests: httpx would cost more CPU than the simulator it measures).

Per run it prints requests/s, accepted signals/s (counted from the responses and
checked against the simulator's /stats), and the simulator's CPU use read from
/proc, so the figure holds even when the load generator competes for the same cores:
``signals per simulator CPU-second`` says how much of a core 25,000 signals/s costs.
A last run paces the same load at 25,000 signals/s (the pipeline's end-to-end
target; ``--paced-rate``) and prints what that costs the simulator.
Figures only: this is not a test and never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from connect_sim.testing import SimulatorHandle, run_simulator
from devtools.clickstream import clickstream

from pipeline.connect.document import request_body
from pipeline.signals.mapping import MappedSignal, MappingOptions, map_event
from pipeline.signals.validation import ValidEvent, validate_event

API_KEY = "bench-api-key"
APP_KEY = "bench-app-key"
TARGET_SIGNALS_PER_S = 25_000  # the pipeline's end-to-end target on 2 shared cores


@dataclass(frozen=True)
class Request:
    body: bytes
    signal_keys: str  # the Signal-Idempotency-Keys header value


@dataclass(frozen=True)
class RunResult:
    seconds: float
    requests: int
    accepted: int
    sim_cpu_s: float
    client_cpu_s: float  # the load generator's own CPU, for context
    load_average: float  # the machine's 1-minute load average after the run

    @property
    def signals_per_s(self) -> float:
        return self.accepted / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def sim_cores(self) -> float:
        return self.sim_cpu_s / self.seconds

    @property
    def signals_per_cpu_s(self) -> float:
        return self.accepted / self.sim_cpu_s if self.sim_cpu_s else float("inf")


def build_requests(batch: int, count: int) -> list[Request]:
    """``count`` distinct batches of ``batch`` valid signals, as the pipeline sends them."""
    signals: list[tuple[str, dict[str, Any]]] = []
    options = MappingOptions(APP_KEY)
    for event in clickstream(batch * count * 2, seed=11, invalid_ratio=0, v1_ratio=0):
        valid = validate_event(event.signal_type, event.record)
        if not isinstance(valid, ValidEvent):
            continue
        mapped = map_event(valid, options)
        if isinstance(mapped, MappedSignal):
            signals.append((mapped.idempotency_key, mapped.signal))
        if len(signals) == batch * count:
            break
    requests = []
    for start in range(0, len(signals) - batch + 1, batch):
        chunk = signals[start : start + batch]
        keys = ", ".join(f'"{key}"' for key, _ in chunk)
        requests.append(Request(request_body([s for _, s in chunk]), keys))
    return requests


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident memory (VmHWM, Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Connection:
    """One keep-alive HTTP/1.1 connection with pre-built requests: a client light
    enough that the simulator, not the load generator, is what gets measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)


def http_request(port: int, request: Request, batch_key: str) -> bytes:
    head = (
        f"POST /graphql HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"x-api-key: {API_KEY}\r\ncontent-type: application/json\r\n"
        f'idempotency-key: "{batch_key}"\r\n'
        f"signal-idempotency-keys: {request.signal_keys}\r\n"
        f"content-length: {len(request.body)}\r\n\r\n"
    )
    return head.encode() + request.body


async def _worker(
    port: int,
    requests: list[Request],
    worker: int,
    deadline: float,
    counts: list[int],
    tag: str,
    interval: float = 0.0,
) -> None:
    """Calls back to back, or one every ``interval`` seconds (a paced rate)."""
    connection = _Connection(*await asyncio.open_connection("127.0.0.1", port))
    started = time.perf_counter()
    try:
        i = 0
        while True:
            if interval:
                await asyncio.sleep(max(0.0, started + i * interval - time.perf_counter()))
            request = http_request(
                port, requests[(worker + i) % len(requests)], f"{tag}-{worker}-{i}"
            )
            status, body = await connection.post(request)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
            ids = orjson.loads(body)["data"]["createSignals"]["signalIds"]
            counts[0] += 1
            counts[1] += sum(1 for x in ids if x is not None)
            i += 1
            if time.perf_counter() >= deadline:
                return
    finally:
        connection.writer.close()


async def _load(
    sim: SimulatorHandle,
    requests: list[Request],
    connections: int,
    duration: float,
    tag: str,
    rate: float,
) -> tuple[int, int, int, float]:
    # one warm-up call per connection (and the simulator's document cache) off the clock
    warm = [0, 0]
    await asyncio.gather(
        *(_worker(sim.port, requests, w, 0, warm, f"warm{tag}") for w in range(connections))
    )
    counts = [0, 0]
    batch = requests[0].signal_keys.count(",") + 1
    interval = connections * batch / rate if rate else 0.0
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _worker(sim.port, requests, w, started + duration, counts, tag, interval)
            for w in range(connections)
        )
    )
    return counts[0], counts[1], warm[1], time.perf_counter() - started


def one_run(
    sim: SimulatorHandle,
    requests: list[Request],
    connections: int,
    duration: float,
    tag: str,
    rate: float = 0.0,
) -> RunResult:
    sim.reset()
    assert sim.pid is not None
    cpu_before, client_before = cpu_seconds(sim.pid), time.process_time()
    n_requests, accepted, warm_up, seconds = asyncio.run(
        _load(sim, requests, connections, duration, tag, rate)
    )
    sim_cpu = cpu_seconds(sim.pid) - cpu_before
    client_cpu = time.process_time() - client_before
    stats = sim.stats()
    assert stats["accepted"] - warm_up == accepted, (stats, accepted)  # responses tell the truth
    return RunResult(seconds, n_requests, accepted, sim_cpu, client_cpu, os.getloadavg()[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--batch", type=int, default=250, help="signals per call (pipeline default)"
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=TARGET_SIGNALS_PER_S,
        help="then one run paced at this many signals/s, for its CPU cost (0: skip)",
    )
    parser.add_argument(
        "--sim-arg", action="append", default=[], help="extra simulator argument (repeatable)"
    )
    args = parser.parse_args(argv)

    requests = build_requests(args.batch, 50)
    size = statistics.mean(len(r.body) for r in requests)
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cpus, "
        f"batches of {args.batch} signals ({size / 1024:.0f} KiB per request), "
        f"{args.connections} connections, {args.duration:g} s per run"
    )
    results = []
    with run_simulator(API_KEY, [APP_KEY], args.sim_arg) as sim:
        for run in range(args.runs):
            result = one_run(sim, requests, args.connections, args.duration, f"r{run}")
            results.append(result)
            print(f"run {run + 1}: {_line(result)}")
        if args.paced_rate:
            paced = one_run(
                sim, requests, args.connections, args.duration, "paced", args.paced_rate
            )
            print(f"paced at {args.paced_rate:,.0f} signals/s: {_line(paced)}")
        assert sim.pid is not None
        largest = max(r.accepted for r in results)
        print(
            f"simulator peak RSS {peak_rss_mib(sim.pid):.0f} MiB "
            f"(a run records up to {largest:,} signals; /reset between runs)"
        )
    median = statistics.median(r.signals_per_s for r in results)
    per_cpu = statistics.median(r.signals_per_cpu_s for r in results)
    cores = statistics.median(r.sim_cores for r in results)
    print(
        f"median: {median:.0f} accepted signals/s, simulator at {cores:.2f} cores, "
        f"{per_cpu:.0f} signals per simulator CPU-second; "
        f"{TARGET_SIGNALS_PER_S:,} signals/s would cost it "
        f"{TARGET_SIGNALS_PER_S / per_cpu:.2f} of a core"
    )


def _line(result: RunResult) -> str:
    return (
        f"{result.requests_per_s:5.0f} req/s {result.signals_per_s:7.0f} signals/s  "
        f"simulator {result.sim_cores:4.2f} cores "
        f"({result.signals_per_cpu_s:6.0f} signals per CPU-second)  "
        f"load generator {result.client_cpu_s / result.seconds:4.2f} cores, "
        f"load average {result.load_average:.1f}"
    )


if __name__ == "__main__":
    main()
