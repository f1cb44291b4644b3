"""The peer benchmark on a shop's clickstream: the project without and with derivation.

    python -m benchmarks peers --runs 2 --peers PM,PMD
    python -m benchmarks.peers_shop --runs 2 [--events 200000] [PM PMD]

``PM`` is ``connect-pipeline run`` with its defaults (ledger, transactions, dead
letters), ``PMD`` the same with ``PIPELINE_DERIVE_ABANDONMENT=both``; both read one
topic of a shop's clickstream (``benchmarks.shop_mix``: ~20-event sessions keyed by
sessionId, 6 partitions, the default 30-minute gap), produced once, and run
alternately.

The shared harness (../shared/bench-peers) cannot run this unchanged: it stops a run
when its sink holds ``BENCH_N`` signals, and its ``produce_p.py`` rewrites P's topic
with add-to-carts unless that topic holds exactly ``BENCH_N`` records; with
derivation on, a run delivers more signals than the topic has records. So this is the
smallest runner around the harness's own pieces, run by its venv's Python
(``peers_shop_driver``): its sink (``sink.py`` under uvicorn), its ``run_one`` (launch,
poll the sink's count every 20 ms, SIGTERM at the count, the consumer's CPU and peak
RSS from ``wait4``) and its ``p_project.py`` launch (the environment its P gets). The
count a run waits for is the variant's ``shop_mix.expected_signals``, computed here.
The broker is the same Tansu build, started by ``devtools.stack`` on a free port, and
the sink gets a free port too, so a harness run elsewhere is not disturbed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from devtools.stack import create_topics, free_port, kafka

from benchmarks.peers import HARNESS, PeerRow, consumed_events
from benchmarks.shop_mix import PARTITIONS, Expected, ShopStream, expected_signals, shop_stream
from benchmarks.shop_mix import produce as produce_stream
from pipeline.config import load_settings

REPO = Path(__file__).resolve().parents[1]
TOPIC: Final = "shop-mix"
APP_KEY: Final = "bench-app-key"  # what the harness's p_project.py sets
#: Variants: the harness's P with more environment.
SHOP_VARIANTS: Final[dict[str, dict[str, str]]] = {
    "PM": {},
    "PMD": {"PIPELINE_DERIVE_ABANDONMENT": "both"},
}
#: A wrong expected count would wait for the wall clock to close the stream's last
#: sessions (~30 min): stop well before.
RUN_TIMEOUT_S: Final = 600
DRIVER: Final = Path(__file__).with_name("peers_shop_driver.py")


def harness_venv() -> Path:
    return Path(os.environ.get("BENCH_WORK", "/tmp/bench-peers")) / "venv"


def harness_copy(work: Path) -> Path:
    """A copy of the harness's files in ``work`` with its venv; that venv's Python."""
    venv = harness_venv()
    if not (venv / "bin" / "uvicorn").exists():
        raise SystemExit(f"{venv} missing: run `bash {HARNESS} --runs 1 B` once to make it")
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("*.py"):
        old.unlink()  # the harness's files are read-only
    for source in HARNESS.parent.glob("*.py"):
        shutil.copy(source, work / source.name)
    if not (work / "venv").exists():
        (work / "venv").symlink_to(venv)
    return work / "venv" / "bin" / "python"


@contextmanager
def environment(extra: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` for the block: the harness's children inherit it."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def expected_for(stream: ShopStream, variant: str) -> Expected:
    """What the variant's consumer delivers, from its settings as it will load them."""
    with environment(SHOP_VARIANTS[variant]):
        settings = load_settings(topics=[TOPIC], default_app_key=APP_KEY)
    return expected_signals(stream, settings)


def run_shop(variants: Sequence[str], runs: int, events: int = 200_000) -> list[PeerRow]:
    """Each variant ``runs`` times, alternated; medians per variant."""
    work = Path(os.environ.get("BENCH_SHOP_WORK", "/tmp/bench-peers-shop"))
    python = harness_copy(work)
    started = time.process_time()
    stream = shop_stream(events)
    expected = {name: expected_for(stream, name) for name in variants}
    print(
        f"shop mix: {len(stream.records):,} events, {stream.sessions:,} sessions, "
        f"{stream.event_time_span_s / 3600:.1f} h of event time, "
        f"{dict(stream.types.most_common())}; expected signals "
        + ", ".join(f"{n} {e.total:,} ({dict(e.derived)} derived)" for n, e in expected.items())
        + f" ({time.process_time() - started:.0f} s CPU)",
        flush=True,
    )
    results = work / "results.jsonl"
    before = len(results.read_text().splitlines()) if results.exists() else 0
    with kafka() as broker:
        create_topics(broker.bootstrap_servers, {TOPIC: PARTITIONS})
        produce_stream(broker.bootstrap_servers, TOPIC, stream)
        del stream
        broker_pid = broker.broker.pid if broker.broker else None
        if broker_pid:  # the harness reads it for the broker's CPU
            (work / "broker.pid").write_text(str(broker_pid))
        sink_port = free_port()
        plan = {
            "variants": list(variants),
            "runs": runs,
            "expected": {name: e.total for name, e in expected.items()},
            "environments": {name: SHOP_VARIANTS[name] for name in variants},
            "common_environment": {
                "BENCH_PROJECT": str(REPO),
                "BENCH_BOOTSTRAP": broker.bootstrap_servers,
                "BENCH_SINK": f"http://127.0.0.1:{sink_port}",
                "BENCH_TOPIC_P": TOPIC,
            },
            "sink_port": sink_port,
            "timeout_s": RUN_TIMEOUT_S,
            "results": str(results),
        }
        (work / "plan.json").write_text(json.dumps(plan))
        try:
            # a process of its own, small like the harness's: see peers_shop_driver
            subprocess.run([str(python), str(DRIVER), "plan.json"], cwd=work, check=True)
        finally:
            (work / "broker.pid").unlink(missing_ok=True)
    rows = [json.loads(line) for line in results.read_text().splitlines()[before:] if line]
    for row in rows:
        row["expected"] = expected[row["variant"]].total
        row["source_events"] = expected[row["variant"]].source
        row["consumed"] = consumed_events(work / "logs" / f"{row['variant']}_{row['run']}.log")
        print(_line(row), flush=True)
    return [summary(name, [r for r in rows if r["variant"] == name]) for name in variants]


def _line(row: dict[str, Any]) -> str:
    wall = row.get("wall_s")
    cpu = row.get("consumer_cpu_s")
    checks = ""
    if row.get("sink_count") != row["expected"] or row.get("consumed") != row["source_events"]:
        checks = (
            f" MISMATCH: sink {row.get('sink_count')} of {row['expected']} expected, "
            f"consumed {row.get('consumed')} of {row['source_events']}"
        )
    return (
        f"  {row['variant']}#{row['run']}: wall {wall or 0:.2f} s, "
        f"{row['source_events'] / wall if wall else 0:,.0f} source events/s, "
        f"{row['expected'] / wall if wall else 0:,.0f} signals/s, "
        f"{(cpu or 0) / row['source_events'] * 1e6:.0f} µs CPU per source event, "
        f"rss {row.get('peak_rss_mb') or 0:.0f} MB, rc {row.get('rc')}{checks}"
    )


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary(name: str, rows: Sequence[dict[str, Any]]) -> PeerRow:
    """Medians of a variant's successful runs (the sink held exactly the expected count)."""
    good = [r for r in rows if r.get("rc") in (0, None) and r.get("wall_s")]
    return PeerRow(
        name,
        events_per_s=_median([r["source_events"] / r["wall_s"] for r in good]),
        cpu_us_per_event=_median(
            [
                r["consumer_cpu_s"] / r["source_events"] * 1e6
                for r in good
                if r.get("consumer_cpu_s")
            ]
        ),
        first_ack_s=_median([r.get("first_ack_s") for r in good]),
        peak_rss_mb=_median([r.get("peak_rss_mb") for r in good]),
        source_events_per_s=_median([r["source_events"] / r["wall_s"] for r in good]),
        signals_per_s=_median([r["expected"] / r["wall_s"] for r in good]),
        workload="shop",
    )


def main(argv: Sequence[str] | None = None) -> None:
    from benchmarks.peers import markdown

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("variants", nargs="*", default=list(SHOP_VARIANTS))
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in SHOP_VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}: {', '.join(SHOP_VARIANTS)}")
    table = run_shop(args.variants, args.runs, args.events)
    print("\n".join(markdown(table)))


if __name__ == "__main__":
    main(sys.argv[1:])
