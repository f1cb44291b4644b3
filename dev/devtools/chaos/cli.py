"""``connect-pipeline chaos``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from devtools.chaos.plan import ChaosConfig
from devtools.chaos.run import ChaosRun


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
    report = ChaosRun(config, echo=click.echo).run()  # the broker: devtools.stack.kafka
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
