"""``connect-pipeline avro``: generate the schemas from the catalog."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline.avro_schemas import stale_files, write_schemas
from pipeline.config import DEFAULT_AVRO_DIR


@click.group()
def avro() -> None:
    """Avro schemas generated from the signal catalog."""


@avro.command()
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_AVRO_DIR, show_default=True)
@click.option("--check", is_flag=True, help="Only report files that differ; exit 1 if any.")
def generate(out: Path, check: bool) -> None:
    """Write avro/v1 and avro/v2 from pipeline/catalog.py."""
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
