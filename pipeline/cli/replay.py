"""``connect-pipeline replay``: re-read a range of the source topics (pipeline.kafka.replay)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from pipeline.cli.run import load_or_exit
from pipeline.kafka.replay import (
    Range,
    UnknownRange,
    bounded_settings,
    report,
    resolve_bounds,
    run_bounded,
)
from pipeline.ops.logs import configure_logging


def _millis(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise click.BadParameter("give a UTC offset, e.g. 2026-11-23T08:00:00+00:00")
    return int(value.timestamp() * 1000)


class IsoTime(click.ParamType):  # type: ignore[type-arg]
    name = "ISO-8601"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time", param, ctx)


@click.command()
@click.option("--topic", "topics", multiple=True, help="Topic to replay (repeatable).")
@click.option("--partition", "partitions", type=int, multiple=True, help="Default: all.")
@click.option("--from-offset", type=click.IntRange(min=0), help="Start at this offset.")
@click.option("--from", "--from-timestamp", "from_time", type=IsoTime(), help="Start time.")
@click.option("--to", "--to-timestamp", "to_time", type=IsoTime(), help="Stop before this time.")
@click.option("--group", default=None, help="Consumer group (default '<group_id>-replay').")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def replay(
    topics: tuple[str, ...],
    partitions: tuple[int, ...],
    from_offset: int | None,
    from_time: datetime | None,
    to_time: datetime | None,
    group: str | None,
    progress: bool,
) -> None:
    """Re-read a range of the source topics; send only what Connect has not accepted.

    Configured from PIPELINE_* like `run` (a one-off Kubernetes Job). Stops at the end
    offsets captured when it starts and prints a JSON report.
    """
    if from_offset is None and from_time is None:
        raise click.UsageError("give --from-offset or --from")
    if from_offset is not None and from_time is not None:
        raise click.UsageError("give only one of --from-offset and --from")
    live = load_or_exit()
    configure_logging(live)
    chosen = list(topics) or live.topics
    if not chosen:
        raise click.UsageError("give --topic (PIPELINE_TOPICS is a pattern)")
    settings = bounded_settings(live, group or f"{live.group_id}-replay", chosen)
    where = Range(from_offset, _millis(from_time), _millis(to_time))
    try:
        bounds = resolve_bounds(settings, chosen, partitions, where, live_group=live.group_id)
    except UnknownRange as error:
        raise click.UsageError(str(error)) from error
    summary = run_bounded(settings, bounds, progress=progress)
    click.echo(json.dumps(report(summary)))
