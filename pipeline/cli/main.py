"""The ``connect-pipeline`` command line. Each command lives in its own module.

Development commands (demo, produce, chaos) are not part of the product: the
``connect-pipeline-dev`` distribution (``dev/``) adds them through the
``connect_pipeline.commands`` entry-point group, so the production image has none.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import click

from pipeline import __version__
from pipeline.cli import avro, check, config_reference, dlq, redrive, replay, run

PLUGIN_GROUP = "connect_pipeline.commands"


@click.group()
@click.version_option(__version__, prog_name="connect-pipeline")
def main() -> None:
    """Kafka clickstream events to Connect createSignals calls."""


def _register_commands() -> None:
    for command in (
        avro.avro,
        check.check,
        run.run,
        replay.replay,
        redrive.redrive,
        config_reference.config_reference,
        dlq.dlq,
    ):
        main.add_command(command)
    for entry in entry_points(group=PLUGIN_GROUP):
        main.add_command(entry.load(), entry.name)


_register_commands()


if __name__ == "__main__":
    main()
