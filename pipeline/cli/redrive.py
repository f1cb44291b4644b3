"""``connect-pipeline redrive``: send dead letters again after a fix (pipeline.kafka.redrive)."""

from __future__ import annotations

import json

import click

from pipeline.cli.run import load_or_exit
from pipeline.kafka.redrive import run_redrive
from pipeline.kafka.replay import report
from pipeline.ops.logs import configure_logging
from pipeline.signals.outcomes import Reason


@click.command()
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    type=click.Choice([str(r) for r in Reason]),
    help="Only records dead-lettered for this reason (repeatable; default: all).",
)
@click.option(
    "--group", default=None, help="Consumer group (default '<group_id>-redrive[-<reason>...]')."
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def redrive(reasons: tuple[str, ...], group: str | None, progress: bool) -> None:
    """Send dead-lettered events again; those that still fail go back, attempt + 1.

    Configured from PIPELINE_* like `run`. Prints a JSON report.
    """
    live = load_or_exit()
    configure_logging(live)
    summary = run_redrive(live, reasons, group=group, progress=progress)
    click.echo(json.dumps(report(summary)))
