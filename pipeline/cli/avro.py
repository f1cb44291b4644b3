"""``connect-pipeline avro``: generate the schemas from the catalog, register them."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.codec.registry import (
    Level,
    Status,
    SubjectStrategy,
    is_mock,
    load_schemas,
    registration_plan,
    registry_client,
)
from pipeline.codec.registry import register as register_schemas
from pipeline.codec.schemas import NAMESPACE, stale_files, write_schemas
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.signals import catalog


@click.group()
def avro() -> None:
    """Avro schemas generated from the signal catalog."""


@avro.command()
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_AVRO_DIR, show_default=True)
@click.option("--check", is_flag=True, help="Only report files that differ; exit 1 if any.")
def generate(out: Path, check: bool) -> None:
    """Write avro/v1 and avro/v2 from pipeline/signals/catalog.py."""
    if check:
        stale = stale_files(out)
        for relative in stale:
            click.echo(f"differs: {out / relative}")
        if stale:
            click.echo("run `connect-pipeline avro generate` and commit avro/", err=True)
            sys.exit(1)
        return
    for path in write_schemas(out):
        click.echo(f"wrote {path}")


@avro.command()
@click.option(
    "--url",
    envvar="PIPELINE_SCHEMA_REGISTRY_URL",
    required=True,
    help="Schema Registry URL [env PIPELINE_SCHEMA_REGISTRY_URL].",
)
@click.option(
    "--basic-auth",
    envvar="PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH",
    default=None,
    metavar="USER:PASSWORD",
    help="Basic auth [env PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH].",
)
@click.option(
    "--subject-strategy",
    envvar="PIPELINE_SUBJECT_NAME_STRATEGY",
    type=click.Choice([s.value for s in SubjectStrategy]),
    default=SubjectStrategy.RECORD.value,
    show_default=True,
    help="topic: <topic>-value; record: connect.signals.<Type>Event; "
    "topic-record: <topic>-connect.signals.<Type>Event [env PIPELINE_SUBJECT_NAME_STRATEGY].",
)
@click.option("--topic", default=None, help="The topic (topic and topic-record strategies).")
@click.option(
    "--type",
    "signal_types",
    multiple=True,
    type=click.Choice(catalog.SIGNAL_TYPES),
    help="Register only these signal types (repeatable); default: all.",
)
@click.option(
    "--compatibility",
    type=click.Choice([level.value for level in Level]),
    default=Level.BACKWARD_TRANSITIVE.value,
    show_default=True,
    help="Level of the local check against the record's registered versions.",
)
@click.option(
    "--avro-dir", type=click.Path(path_type=Path), default=DEFAULT_AVRO_DIR, show_default=True
)
@click.option("--dry-run", is_flag=True, help="Check only; register nothing.")
def register(
    url: str,
    basic_auth: str | None,
    subject_strategy: str,
    topic: str | None,
    signal_types: tuple[str, ...],
    compatibility: str,
    avro_dir: Path,
    dry_run: bool,
) -> None:
    """Register avro/ with a Schema Registry, earlier edition first, compatibility checked.

    Exit status 1 when a schema is refused (the message names the subject and the
    problem) or the registry fails; nothing is registered after a refusal.
    """
    strategy = SubjectStrategy(subject_strategy)
    if strategy is not SubjectStrategy.RECORD and not topic:
        raise click.UsageError(f"--subject-strategy {strategy} needs --topic")
    records = [f"{NAMESPACE}.{catalog.SIGNALS[t].record_name}" for t in signal_types] or None
    plan = registration_plan(load_schemas(avro_dir), strategy, topic, records)
    registry_check = not is_mock(url)
    if not registry_check:
        click.echo("note: the mock registry has no compatibility endpoint; local check only")
    try:
        results = register_schemas(
            registry_client(url, basic_auth),
            plan,
            level=Level(compatibility),
            registry_check=registry_check,
            dry_run=dry_run,
            strategy=strategy,
        )
    except Exception as error:  # the registry's errors: unreachable, auth, invalid schema
        click.echo(f"schema registry error: {type(error).__name__}: {error}", err=True)
        sys.exit(1)
    for result in results:
        refused = result.status is Status.REFUSED
        click.echo(result.describe(), err=refused)
    if any(r.status is Status.REFUSED for r in results):
        sys.exit(1)
