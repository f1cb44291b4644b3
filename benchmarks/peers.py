"""The peer comparison from this suite: the shared harness, then ratios from the same run.

    python -m benchmarks peers [--runs 3] [--peers B,C,E1,P,P0,P2,PD,PDq,PM,PMD]

Runs ``../shared/bench-peers/run.sh`` (when that harness is present) on the same
machine, one variant after another, and reads the rows it appended to its
``results.jsonl``. Variants of P with more environment (the harness runs
``connect-pipeline run`` with the caller's environment; ``ENVIRONMENTS``): ``P2`` with
``PIPELINE_WORKERS=2``; ``PD`` with derived abandonment on (``both``, defaults
otherwise); ``PDq`` the same with a session gap longer than the stream, so no session
closes during the run (what observing alone costs). Ratios are to C and E1 from the
same run only: absolute figures move with the machine.

The harness stops a run when its sink holds 200,000 signals; with derivation on,
derived signals count too, so the source events a P-variant consumed are read from
its log (the ``consumed N`` summary line) and its CPU is given per source event.

``PM`` and ``PMD`` run on a shop's clickstream instead (sessions of page views, product
views, add-to-carts, some orders; ``benchmarks.peers_shop``): the project with its
defaults, and with derived abandonment on. Their rows are in a table of their own,
since their workload is not the harness's.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO.parent / "shared" / "bench-peers" / "run.sh"
DEFAULT_PEERS = ("B", "C", "E1", "P", "P0", "P2")
#: Variants that are the harness's P run with more environment.
ENVIRONMENTS: dict[str, dict[str, str]] = {
    "P2": {"PIPELINE_WORKERS": "2"},
    "PD": {"PIPELINE_DERIVE_ABANDONMENT": "both"},
    # 200,000 events 37 ms apart span ~2 h of event time: a 1-day gap closes nothing
    "PDq": {"PIPELINE_DERIVE_ABANDONMENT": "both", "PIPELINE_SESSION_GAP_S": "86400"},
}
_CONSUMED = re.compile(rb"^consumed (\d+), delivered", re.MULTILINE)


@dataclass(frozen=True)
class PeerRow:
    variant: str
    events_per_s: float | None  # launch to the sink holding every event
    cpu_us_per_event: float | None  # the consumer's own CPU (its children included)
    first_ack_s: float | None
    peak_rss_mb: float | None
    #: P variants: source events consumed (from the log) per second of the run, and
    #: CPU per source event (not per signal at the sink: derived signals count there)
    source_events_per_s: float | None
    signals_per_s: float | None = None  # at the sink, derived ones included (shop rows)
    workload: str = "addToCart"  # the harness's; "shop": benchmarks.peers_shop


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if isinstance(v, int | float)]
    return statistics.median(present) if present else None


def _rows(results: Path, since: int) -> list[dict[str, Any]]:
    with results.open() as f:
        lines = f.readlines()[since:]
    return [json.loads(line) for line in lines if line.strip()]


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open() as f:
        return sum(1 for _ in f)


def consumed_events(log: Path) -> int | None:
    """Source events a ``connect-pipeline run`` consumed, from its summary line(s)."""
    try:
        found = _CONSUMED.findall(log.read_bytes())
    except OSError:
        return None
    return sum(int(n) for n in found) if found else None


def run_peers(variants: Sequence[str], runs: int) -> list[PeerRow]:
    """Each variant ``runs`` times through the harness (the shop-mix ones through
    ``peers_shop``); medians per variant."""
    from benchmarks import peers_shop  # here: it imports this module

    work = Path(os.environ.get("BENCH_WORK", "/tmp/bench-peers"))
    results = work / "results.jsonl"
    env = {**os.environ, "BENCH_PROJECT": str(REPO)}
    collected: list[dict[str, Any]] = []
    shop = [v for v in variants if v in peers_shop.SHOP_VARIANTS]
    plain = [v for v in variants if v not in ENVIRONMENTS and v not in shop]
    passes: list[tuple[list[str], str | None]] = [(plain, None)]
    passes += [(["P"], v) for v in variants if v in ENVIRONMENTS]
    for names, alias in passes:
        if not names:
            continue
        extra = ENVIRONMENTS[alias] if alias else {}
        before = _count_lines(results)
        command = ["bash", str(HARNESS), "--runs", str(runs), *names]
        shown = " ".join(f"{k}={v}" for k, v in extra.items())
        print(f"$ {' '.join(command)}" + (f" ({shown})" if shown else ""), flush=True)
        subprocess.run(command, cwd=REPO, env={**env, **extra}, check=True)
        for row in _rows(results, before):
            if row["variant"].startswith("P"):  # its log is overwritten by the next pass
                row["consumed"] = consumed_events(
                    work / "logs" / f"{row['variant']}_{row['run']}.log"
                )
            if alias:
                row["variant"] = alias
            collected.append(row)
    by_shop = {r.variant: r for r in peers_shop.run_shop(shop, runs)} if shop else {}
    table = []
    for name in variants:
        if name in by_shop:
            table.append(by_shop[name])
            continue
        rows = [r for r in collected if r["variant"] == name and r.get("rc") in (0, None)]
        n = [
            r.get("consumed") or r.get("sink_count") or r.get("consumer_report", {}).get("n")
            for r in rows
        ]
        source = [
            r["consumed"] / r["wall_s"] if r.get("consumed") and r.get("wall_s") else None
            for r in rows
        ]
        cpu = [
            r["consumer_cpu_s"] / count * 1e6 if r.get("consumer_cpu_s") and count else None
            for r, count in zip(rows, n, strict=True)
        ]
        table.append(
            PeerRow(
                name,
                _median([r.get("eps") for r in rows]),
                _median(cpu),
                _median([r.get("first_ack_s") for r in rows]),
                _median([r.get("peak_rss_mb") for r in rows]),
                _median(source),
            )
        )
    return table


def ratio(row: PeerRow, base: PeerRow | None) -> str:
    if base is None or not row.events_per_s or not base.events_per_s:
        return "-"
    if row.workload != base.workload:
        return "-"
    return f"{row.events_per_s / base.events_per_s:.2f}x"


def _show(v: float | None, spec: str) -> str:
    return format(v, spec) if v is not None else "-"


def cost(row: PeerRow, base: PeerRow | None) -> str:
    """``row``'s consumer CPU per source event and wall time over ``base``'s, in %."""
    if base is None or row is base or not row.cpu_us_per_event or not base.cpu_us_per_event:
        return "-"
    cpu = row.cpu_us_per_event / base.cpu_us_per_event - 1
    if not row.events_per_s or not base.events_per_s:
        return f"CPU {cpu:+.0%}"
    return f"CPU {cpu:+.0%}, wall {base.events_per_s / row.events_per_s - 1:+.0%}"


def markdown(table: Sequence[PeerRow]) -> list[str]:
    by_name = {r.variant: r for r in table}
    c, e1 = by_name.get("C"), by_name.get("E1")
    lines: list[str] = []
    harness = [r for r in table if r.workload != "shop"]
    if harness:
        lines += [
            "| variant | events/s (launch to last) | vs C | vs E1 | consumer CPU µs/event "
            "| first ack s | peak RSS MB | source events/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for r in harness:
        lines.append(
            f"| {r.variant} | {_show(r.events_per_s, ',.0f')} | {ratio(r, c)} | {ratio(r, e1)} "
            f"| {_show(r.cpu_us_per_event, '.0f')} | {_show(r.first_ack_s, '.1f')} "
            f"| {_show(r.peak_rss_mb, '.0f')} | {_show(r.source_events_per_s, ',.0f')} |"
        )
    shop = [r for r in table if r.workload == "shop"]
    if shop:
        pm = by_name.get("PM")
        lines += [
            *([""] if lines else []),
            "| variant (shop mix) | source events/s | signals/s at the sink "
            "| consumer CPU µs per source event | peak RSS MB | first ack s | over PM |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in shop:
            lines.append(
                f"| {r.variant} | {_show(r.source_events_per_s, ',.0f')} "
                f"| {_show(r.signals_per_s, ',.0f')} | {_show(r.cpu_us_per_event, '.0f')} "
                f"| {_show(r.peak_rss_mb, '.0f')} | {_show(r.first_ack_s, '.1f')} "
                f"| {cost(r, pm)} |"
            )
    return lines
