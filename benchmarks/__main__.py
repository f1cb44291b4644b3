"""The benchmark suite: one command, one table of figures with the machine they came from.

    make bench                                  # = python -m benchmarks (everything)
    python -m benchmarks [BENCH ...] [--events 200000] [--runs 3] [--quick] ...

BENCH is any of (default: all of them, in this order):

  cpu        CPU path (decode+validate+map) vs fastavro decode-only, same bytes, ratio
  backlog    end to end from a backlog: events/s and peak RSS, 1 consumer process
  scaling    the same backlog with 2 consumer processes in one group
  reference  a plain reference pipeline on the same backlog; our throughput as a ratio
  latency    p50/p99 from produce to acceptance at a steady produce rate
  rss        peak RSS under a large backlog (--rss-events, default 1,000,000)
  sim        the Connect simulator's own capacity (benchmarks.sim_capacity)
  replay     replay throughput (benchmarks.replay, when present)

and, on request only (it wraps the consumer's methods in this process):

  breakdown  where the consumer thread's time goes, per accepted signal
  peers      the shared peer harness (../shared/bench-peers): B, C, E1, P, P0 and P with
             PIPELINE_WORKERS=2 in one run, ratios to C and E1 (--peers to choose);
             PD/PDq derive abandonment on that workload, PM/PMD run the project without
             and with derivation on a shop's clickstream (benchmarks.peers_shop)
  ledger     start time with ledgers of 0, 1M, 5M records; replay peak RSS (benchmarks.ledger)

Everything runs on this machine: the embedded Tansu broker (or
PIPELINE_KAFKA_BOOTSTRAP_SERVERS), the Connect simulator in its own process with server
idempotency on, a local schema registry over HTTP, and the pipeline as
``connect-pipeline run`` child processes.
Figures only: nothing here fails on a slow machine. Quote medians of several runs; the
machine is noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from benchmarks import machine

if TYPE_CHECKING:
    from benchmarks.end_to_end import RunResult
    from benchmarks.stack import Backlog

BENCHES = ("cpu", "backlog", "scaling", "reference", "latency", "rss", "sim", "replay")
ON_REQUEST = ("breakdown", "ledger", "peers")
MIB = 1024 * 1024


@dataclass
class Report:
    """Result rows, printed as one Markdown table at the end."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, bench: str, figure: str, value: str, target: str = "") -> None:
        self.rows.append((bench, figure, value, target))
        print(f"  {bench}: {figure} = {value}", flush=True)

    def print(self, args: argparse.Namespace, elapsed_s: float) -> None:
        print()
        print("## Machine")
        print()
        print("| | |")
        print("|---|---|")
        for label, value in machine.describe():
            print(f"| {label} | {value} |")
        print()
        print(f"## Results (`{command_line(args)}`, {elapsed_s / 60:.1f} min)")
        print()
        print("| benchmark | figure | value | target |")
        print("|---|---|---:|---|")
        for row in self.rows:
            print("| " + " | ".join(row) + " |")
        if self.notes:
            print()
            for note in self.notes:
                print(f"- {note}")


def command_line(args: argparse.Namespace) -> str:
    return "python -m benchmarks " + " ".join(sys.argv[1:]) if sys.argv[1:] else "make bench"


def spread(values: Sequence[float], fmt: str = ",.0f") -> str:
    """Median, with min-max when there are several runs."""
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:{fmt}}"
    return f"{med:{fmt}} ({min(values):{fmt}}–{max(values):{fmt}}, n={len(values)})"


def mib(values: Sequence[float]) -> str:
    return spread([v / MIB for v in values], ",.0f") + " MiB"


# --- the benchmarks ------------------------------------------------------------------------


def bench_cpu(args: argparse.Namespace, report: Report) -> None:
    from benchmarks import cpu_path
    from pipeline.signals.mapping import MappingOptions

    prepared, decoder, _ = cpu_path.prepare(args.cpu_events, args.seed)
    full = cpu_path.full_path(decoder, MappingOptions(default_app_key="bench-app"))
    full(prepared)  # warm-up: caches filled outside the timing
    cpu_path.decode_only(prepared)
    runs = max(3, args.runs)
    a, b = cpu_path.interleaved(cpu_path.decode_only, full, prepared, runs)
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    label = f"cpu ({len(prepared):,} events, in-process)"
    report.add(label, "fastavro decode only, events per CPU-second", spread(a))
    report.add(label, "decode+validate+map, events per CPU-second", spread(b))
    report.add(label, "ratio full / decode-only", spread(ratios, ".2f"), ">= 0.6")


def bench_backlog(args: argparse.Namespace, report: Report, ctx: Context) -> None:
    from benchmarks.end_to_end import run_backlog

    backlog = ctx.backlog(args)
    results = [run_backlog(ctx.stack, backlog) for _ in range(args.runs)]
    ctx.ours = results
    label = f"backlog ({backlog.produced:,} events, 1 process)"
    report.add(label, "events/s, launch to last acceptance", spread([r.rate for r in results]))
    report.add(
        label,
        "accepted/s, steady (10%–90% of acceptances)",
        spread([r.steady_rate for r in results]),
        ">= 25,000 events/s",
    )
    report.add(label, "launch to first acceptance, s", spread([r.first_s for r in results], ".1f"))
    add_cpu(report, label, results)
    report.add(label, "peak RSS of the pipeline", mib([r.peak_rss_bytes[0] for r in results]))
    report.add(label, "duplicates at the simulator", spread([r.duplicates for r in results]))


def add_cpu(report: Report, label: str, results: Sequence[RunResult]) -> None:
    """CPU per signal by component: robust on a noisy machine, and it gives a ceiling."""
    per = [r.cpu_us for r in results if r.cpu_us]
    if not per:
        return
    parts = {k: statistics.median(p[k] for p in per) for k in per[0]}
    shown = " / ".join(f"{k} {v:.0f}" for k, v in parts.items())
    report.add(label, "CPU µs per accepted signal, steady", shown)
    if parts.get("broker"):
        cores = len(os.sched_getaffinity(0))
        ceiling = cores * 1e6 / sum(parts.values())
        report.add(
            label, f"ceiling on {cores} cores at that CPU cost, signals/s", f"{ceiling:,.0f}"
        )


def bench_scaling(args: argparse.Namespace, report: Report, ctx: Context) -> None:
    from benchmarks.end_to_end import run_backlog

    backlog = ctx.backlog(args)
    if not ctx.ours:
        ctx.ours = [run_backlog(ctx.stack, backlog) for _ in range(args.runs)]
    two = [run_backlog(ctx.stack, backlog, consumers=2) for _ in range(args.runs)]
    label = f"scaling ({backlog.produced:,} events)"
    one_rate = statistics.median(r.rate for r in ctx.ours)
    one_steady = statistics.median(r.steady_rate for r in ctx.ours)
    report.add(label, "2 processes: events/s, launch to last", spread([r.rate for r in two]))
    report.add(label, "2 processes: accepted/s, steady", spread([r.steady_rate for r in two]))
    add_cpu(report, label + " 2 processes", two)
    report.add(
        label,
        "speed-up 2 vs 1 process (steady; launch to last)",
        f"{statistics.median(r.steady_rate for r in two) / one_steady:.2f}x; "
        f"{statistics.median(r.rate for r in two) / one_rate:.2f}x",
    )
    peaks = [max(r.peak_rss_bytes) for r in two]
    report.add(label, "2 processes: peak RSS of the larger", mib(peaks))
    workers = [run_backlog(ctx.stack, backlog, workers=2) for _ in range(args.runs)]
    report.add(
        label, "PIPELINE_WORKERS=2: events/s, launch to last", spread([r.rate for r in workers])
    )
    report.add(
        label, "PIPELINE_WORKERS=2: accepted/s, steady", spread([r.steady_rate for r in workers])
    )
    add_cpu(report, label + " PIPELINE_WORKERS=2", workers)


def bench_reference(args: argparse.Namespace, report: Report, ctx: Context) -> None:
    from benchmarks.end_to_end import run_backlog, run_reference

    backlog = ctx.backlog(args)
    if not ctx.ours:
        ctx.ours = [run_backlog(ctx.stack, backlog) for _ in range(args.runs)]
    ref = run_reference(ctx.stack, backlog, events=args.reference_events)
    label = f"reference (first {ref.events:,} events of the same backlog)"
    report.add(label, "accepted/s, steady", f"{ref.steady_rate:,.0f}")
    report.add(label, "events/s, launch to exit", f"{ref.rate:,.0f}")
    report.add(label, "accepted by the simulator", f"{ref.accepted:,} of {ref.events:,}")
    report.add(label, "peak RSS", mib([ref.peak_rss_bytes]))
    ours = statistics.median(r.steady_rate for r in ctx.ours)
    ours_wall = statistics.median(r.rate for r in ctx.ours)
    report.add(
        label,
        "ours / reference, steady accepted/s (launch to last)",
        f"{ours / ref.steady_rate:.1f}x ({ours_wall / ref.rate:.1f}x)",
        ">= 15x",
    )
    report.notes.append(
        "reference: confluent-kafka AvroDeserializer + SchemaRegistryClient (writer schema), "
        "one pydantic model per event, one createSignals call per event over one keep-alive "
        "httpx.Client, auto-commit, no DLQ/retries/idempotency (benchmarks/reference.py); "
        "it reads the same Confluent-framed backlog through the same local registry."
    )


def bench_latency(args: argparse.Namespace, report: Report, ctx: Context) -> None:
    from benchmarks.latency import run_latency

    result = run_latency(ctx.stack, rate=args.rate, duration_s=args.latency_seconds)
    label = f"latency ({result.produced:,} events at {result.achieved_rate:,.0f}/s)"
    report.add(label, "p50 produce to acceptance, ms", f"{result.p50_ms:.0f}")
    report.add(label, "p99 produce to acceptance, ms", f"{result.p99_ms:.0f}", "<= 250 ms")
    report.add(label, "max, ms", f"{result.max_ms:.0f}")


def bench_rss(args: argparse.Namespace, report: Report, ctx: Context) -> None:
    from benchmarks.end_to_end import run_backlog

    backlog = ctx.stack.produce_backlog(args.rss_events, seed=args.seed + 1)
    result = run_backlog(ctx.stack, backlog, timeout_s=1800)
    label = f"rss ({backlog.produced:,}-event backlog, 1 process)"
    report.add(label, "peak RSS of the pipeline", mib([result.peak_rss_bytes[0]]), "< 300 MB")
    report.add(label, "events/s, launch to last acceptance", f"{result.rate:,.0f}")
    report.add(label, "backlog produced in, s", f"{backlog.produce_s:.0f}")


def _module_main(name: str, argv: list[str], report: Report, label: str) -> None:
    """Another helper's benchmark, run as its own command; its output is printed as is."""
    if importlib.util.find_spec(f"benchmarks.{name}") is None:
        report.add(label, "skipped", f"benchmarks/{name}.py not present")
        return
    command = [sys.executable, "-m", f"benchmarks.{name}", *argv]
    print(f"$ {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, text=True, capture_output=True)
    print(done.stdout, flush=True)
    if done.returncode != 0:  # progress bars otherwise: only the end says anything
        print(done.stderr[-3000:], flush=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    status = "" if done.returncode == 0 else f" (exit {done.returncode})"
    report.add(label, f"`python -m benchmarks.{name} {' '.join(argv)}`", summary + status)


def bench_sim(args: argparse.Namespace, report: Report) -> None:
    argv = ["--duration", "1", "--runs", "1"] if args.quick else []
    _module_main("sim_capacity", argv, report, "sim (simulator alone)")


def bench_breakdown(args: argparse.Namespace, report: Report, ctx: Context) -> None:
    from benchmarks.breakdown import print_breakdown, run_breakdown

    seconds, signals, totals = run_breakdown(ctx.stack, args.events)
    print_breakdown(seconds, signals, totals)
    label = f"breakdown ({args.events:,} events, in-process)"
    report.add(label, "consumer thread, accepted/s", f"{signals / seconds:,.0f}")
    for name in ("process", "process > decode", "_delivered", "_dead_letter", "producer.poll"):
        if name in totals:
            report.add(label, f"{name}, µs per signal", f"{totals[name] * 1e6 / signals:.1f}")


def bench_peers(args: argparse.Namespace, report: Report) -> None:
    from benchmarks import peers

    if not peers.HARNESS.exists():
        report.add("peers", "skipped", f"{peers.HARNESS} not present")
        return
    table = peers.run_peers(args.peers.split(","), args.runs)
    by_name = {r.variant: r for r in table}
    label = f"peers (shared harness, median of {args.runs})"
    for row in table:
        shown = f"{row.events_per_s:,.0f}" if row.events_per_s else "-"
        target = {"P": ">= 1.0x C, >= 1.75x E1", "P2": ">= 1.4x C"}.get(row.variant, "")
        ratios = f"{peers.ratio(row, by_name.get('C'))} C, {peers.ratio(row, by_name.get('E1'))} E1"
        report.add(label, f"{row.variant} events/s ({ratios})", shown, target)
    report.notes.extend(peers.markdown(table))


def bench_replay(args: argparse.Namespace, report: Report) -> None:
    argv = args.replay_arg or (["--events", "5000", "--keys", "20000"] if args.quick else [])
    _module_main("replay", argv, report, "replay")


def bench_ledger(args: argparse.Namespace, report: Report) -> None:
    argv = args.ledger_arg or (["--scale", "0.01"] if args.quick else [])
    _module_main("ledger", argv, report, "ledger")


# --- running ------------------------------------------------------------------------------


class Context:
    """One broker + registry + simulator, and one backlog shared by the benchmarks."""

    def __init__(self) -> None:
        from benchmarks.stack import Stack

        self.stack = Stack()
        self._backlog: Backlog | None = None
        self.ours: list[RunResult] = []

    def backlog(self, args: argparse.Namespace) -> Backlog:
        if self._backlog is None:
            print(f"producing a backlog of {args.events:,} events ...", flush=True)
            self._backlog = self.stack.produce_backlog(args.events, seed=args.seed)
            b = self._backlog
            print(
                f"  {b.produced:,} events on {b.partitions} partitions in {b.produce_s:.1f} s: "
                f"{b.valid:,} valid, {b.invalid:,} invalid, {b.earlier_edition:,} "
                "earlier-edition; Confluent framing",
                flush=True,
            )
        return self._backlog


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("bench", nargs="*", metavar="BENCH", help="see below (default: all)")
    parser.add_argument("--events", type=int, default=200_000, help="backlog size")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (medians quoted)")
    parser.add_argument("--rss-events", type=int, default=1_000_000)
    parser.add_argument("--reference-events", type=int, default=10_000)
    parser.add_argument("--cpu-events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1_000, help="latency: events/s")
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--peers", default=",".join(("B", "C", "E1", "P", "P0", "P2")), help="peers: variants"
    )
    parser.add_argument(
        "--ledger-arg", action="append", default=[], help="argument for benchmarks.ledger"
    )
    parser.add_argument(
        "--replay-arg", action="append", default=[], help="argument for benchmarks.replay"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="a pipeline setting for every pipeline run, e.g. --set BATCH_MAX_SIGNALS=500",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a quick look (and the smoke test): a few seconds each",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events = min(args.events, 5_000)
        args.rss_events = min(args.rss_events, 20_000)
        args.reference_events = min(args.reference_events, 500)
        args.cpu_events = min(args.cpu_events, 2_000)
        args.latency_seconds = min(args.latency_seconds, 3)
        args.runs = 1
    unknown = set(args.bench) - {*BENCHES, *ON_REQUEST, "all"}
    if unknown:
        known = ", ".join((*BENCHES, *ON_REQUEST))
        parser.error(f"unknown benchmark {sorted(unknown)}: choose from {known}")
    args.pipeline_settings = {}
    for item in args.set:
        name, sep, value = item.removeprefix("PIPELINE_").partition("=")
        if not sep or not name:
            parser.error(f"--set {item!r}: expected SETTING=VALUE, e.g. BATCH_MAX_SIGNALS=500")
        args.pipeline_settings[name] = value
    if not args.bench or "all" in args.bench:
        args.bench = list(BENCHES)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = Report()
    started = time.monotonic()
    needs_stack = {"backlog", "scaling", "reference", "latency", "rss", "breakdown"} & set(
        args.bench
    )
    ctx = Context() if needs_stack else None
    steps: dict[str, Callable[[], None]] = {
        "cpu": lambda: bench_cpu(args, report),
        "sim": lambda: bench_sim(args, report),
        "replay": lambda: bench_replay(args, report),
        "ledger": lambda: bench_ledger(args, report),
        "peers": lambda: bench_peers(args, report),
    }
    if ctx is not None:
        steps.update(
            {
                "backlog": lambda: bench_backlog(args, report, ctx),
                "scaling": lambda: bench_scaling(args, report, ctx),
                "reference": lambda: bench_reference(args, report, ctx),
                "latency": lambda: bench_latency(args, report, ctx),
                "rss": lambda: bench_rss(args, report, ctx),
                "breakdown": lambda: bench_breakdown(args, report, ctx),
            }
        )
    try:
        if ctx is not None:
            ctx.stack.pipeline_settings = args.pipeline_settings
            ctx.stack.__enter__()
        for name in (*BENCHES, *ON_REQUEST):
            if name in args.bench:
                print(f"[{name}]", flush=True)
                steps[name]()
    finally:
        if ctx is not None:
            ctx.stack.__exit__(None, None, None)
    report.print(args, time.monotonic() - started)


if __name__ == "__main__":
    main()
