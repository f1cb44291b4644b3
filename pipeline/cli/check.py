"""``connect-pipeline check``: the offline check on JSON Lines."""

from __future__ import annotations

import json
import sys
from typing import TextIO

import click

from pipeline.connect.document import inline_mutation
from pipeline.signals.catalog import Tier
from pipeline.signals.check import CheckOptions, check_lines
from pipeline.signals.mapping import MappingOptions


@click.command()
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--app-key", envvar="CONNECT_DEFAULT_APP_KEY", help="Default appKey.")
@click.option("--allow-anonymous", is_flag=True, help="Accept events with no identity.")
@click.option(
    "--tier",
    type=click.Choice([t.value for t in Tier]),
    default=Tier.ULTIMATE.value,
    show_default=True,
    help="Subscription tier: types outside it are rejected.",
)
@click.option("--graphql", is_flag=True, help="Also print each signal as a createSignals mutation.")
def check(
    source: TextIO,
    app_key: str | None,
    allow_anonymous: bool,
    tier: str,
    graphql: bool,
) -> None:
    """Check events (JSON Lines, a file or - for stdin) without Kafka.

    Writes one JSON line per input line: the signal it would send, or the rejection
    with its field and reason. Exits 1 if any line was rejected.
    """
    options = CheckOptions(MappingOptions(app_key, allow_anonymous), Tier(tier))
    rejected = 0
    for result in check_lines(source, options):
        if not result["ok"]:
            rejected += 1
        elif graphql:
            result["mutation"] = inline_mutation([result["signal"]])
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    if rejected:
        click.echo(f"{rejected} line(s) rejected", err=True)
        sys.exit(1)
