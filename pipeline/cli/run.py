"""``connect-pipeline run``: the consumer, configured from PIPELINE_* settings."""

from __future__ import annotations

import sys

import click

from pipeline.config import ConfigError, Settings, load_settings


def load_or_exit() -> Settings:
    """The settings of a command that needs a real Kafka, or exit 2 naming each problem."""
    try:
        settings = load_settings()
    except ConfigError as error:
        click.echo(f"invalid configuration:\n{error}", err=True)
        sys.exit(2)
    if not settings.kafka_bootstrap_servers:
        click.echo("invalid configuration:\nPIPELINE_KAFKA_BOOTSTRAP_SERVERS: required", err=True)
        sys.exit(2)
    return settings


@click.command()
@click.option(
    "--stop-after-idle",
    type=float,
    default=None,
    help="Stop after this many seconds with nothing to do (backfills, tests).",
)
def run(stop_after_idle: float | None) -> None:
    """Consume the configured topics and deliver signals to Connect until SIGTERM."""
    settings = load_or_exit()
    from pipeline.kafka import runner

    summary = runner.run(settings, stop_after_idle_s=stop_after_idle)
    click.echo(
        f"consumed {summary.consumed}, delivered {summary.delivered_total}, "
        f"dead-lettered {summary.dead_lettered_total}, "
        f"skipped (already accepted) {summary.skipped}",
        err=True,
    )
