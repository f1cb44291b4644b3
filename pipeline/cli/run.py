"""``connect-pipeline run``: the consumer, configured from PIPELINE_* settings."""

from __future__ import annotations

import gc
import sys
from typing import Final

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
    gc.disable()  # the imports below make long-lived objects only: no use collecting
    settings = load_or_exit()
    if settings.workers > 1:
        gc.enable()
        from pipeline.kafka.workers import supervise

        def worker() -> None:  # forked: the environment is the worker's now
            consume(load_or_exit(), stop_after_idle)

        args = [] if stop_after_idle is None else ["--stop-after-idle", str(stop_after_idle)]
        sys.exit(supervise(settings, args, run_worker=worker))
    consume(settings, stop_after_idle)


def consume(settings: Settings, stop_after_idle: float | None) -> None:
    """One consumer process: ``run`` itself, or one of its workers."""
    gc.disable()
    # The group join first: it waits on the broker (3 s on Tansu) while the rest of the
    # process is imported and built (pipeline.kafka.group_join).
    from pipeline.kafka.group_join import JoiningConsumer

    joined = JoiningConsumer(settings)
    from pipeline.kafka import runner

    settle_gc()
    summary = runner.run(settings, stop_after_idle_s=stop_after_idle, joined=joined)
    click.echo(
        f"consumed {summary.consumed}, delivered {summary.delivered_total}, "
        f"dead-lettered {summary.dead_lettered_total}, "
        f"skipped (already accepted) {summary.skipped}",
        err=True,
    )


#: Young-generation threshold: the data path allocates a few short-lived containers per
#: record, most of which reference counting frees at once; collecting every 700 net
#: allocations (Python's default) spent 10-25 µs a record on a backlog (0.7-1.0 s of
#: collections for 40,000 events), mostly rescanning start-up objects.
GC_THRESHOLDS: Final = (10_000, 50, 100)


def settle_gc() -> None:
    """Start-up objects (modules, schemas, settings) leave the collector's view
    (``gc.freeze``, no collection first: it cost 0.1-0.3 s of start-up), young
    collections run less often, and collection (off during the imports) resumes.
    Only reference cycles wait longer to be freed."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.enable()
