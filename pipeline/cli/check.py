"""``connect-pipeline check``: the offline check on JSON Lines."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import click

from pipeline.connect.document import inline_mutation
from pipeline.sessions.derive import KINDS, DeriveOptions
from pipeline.sessions.offline import derive_lines
from pipeline.sessions.store import SessionOptions, SessionStore
from pipeline.signals import catalog
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
@click.option(
    "--derive",
    is_flag=True,
    help="Print the abandonment signals the file's sessions derive (and rejected lines).",
)
@click.option(
    "--kinds",
    type=click.Choice(sorted(KINDS)),
    default="both",
    show_default=True,
    help="With --derive: cart, browse or both.",
)
@click.option(
    "--session-gap-s",
    envvar="PIPELINE_SESSION_GAP_S",
    type=click.FloatRange(min=0, min_open=True),
    default=1800.0,
    show_default=True,
    help="With --derive: a session expires after this much inactivity (event time).",
)
@click.option(
    "--session-grace-s",
    envvar="PIPELINE_SESSION_GRACE_S",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="With --derive: events this late still count.",
)
def check(
    source: TextIO,
    app_key: str | None,
    allow_anonymous: bool,
    tier: str,
    graphql: bool,
    derive: bool,
    kinds: str,
    session_gap_s: float,
    session_grace_s: float,
) -> None:
    """Check events (JSON Lines, a file or - for stdin) without Kafka.

    Writes one JSON line per input line: the signal it would send, or the rejection
    with its field and reason. Exits 1 if any line was rejected.

    With --derive, the file is one stream of sessions: writes the cart and browse
    abandonment signals they derive (sessions still open at the end of the file
    expire there), and the rejected lines.
    """
    options = CheckOptions(MappingOptions(app_key, allow_anonymous), Tier(tier))
    results: Iterable[dict[str, Any]]
    store: SessionStore | None = None
    if derive:
        if not KINDS["both"] <= catalog.types_in_tier(options.tier):
            raise click.UsageError(f"--derive needs a tier with abandonment signals, not {tier}")
        sessions = SessionOptions(
            DeriveOptions(KINDS[kinds], options.mapping),
            gap_ms=round(session_gap_s * 1000),
            grace_ms=round(session_grace_s * 1000),
        )
        store = SessionStore("check", sessions)
        results = derive_lines(source, options, store)
    else:
        results = check_lines(source, options)
    rejected = 0
    for result in results:
        if not result["ok"]:
            rejected += 1
        elif graphql:
            result["mutation"] = inline_mutation([result["signal"]])
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    if store is not None:
        c = store.counters
        derived = ", ".join(f"{kind} {n}" for kind, n in sorted(c.derived.items())) or "none"
        click.echo(
            f"sessions {c.opened}, derived: {derived}; late events {c.late}, "
            f"after their session closed {c.reused}",
            err=True,
        )
    if rejected:
        click.echo(f"{rejected} line(s) rejected", err=True)
        sys.exit(1)
