"""The ``connect-pipeline`` command line. Each command group lives in its own module."""

from __future__ import annotations

import click

from pipeline import __version__


@click.group()
@click.version_option(__version__, prog_name="connect-pipeline")
def main() -> None:
    """Kafka clickstream events to Connect createSignals calls."""


def _register_commands() -> None:
    from pipeline import chaos, check_cli, demo, run_cli, schema_cli

    main.add_command(schema_cli.avro)
    main.add_command(check_cli.check)
    main.add_command(run_cli.run)
    main.add_command(demo.demo)
    from pipeline import redrive, replay

    main.add_command(replay.replay)
    main.add_command(redrive.redrive)
    main.add_command(chaos.chaos)
    from pipeline import config_doc, produce_cli

    main.add_command(produce_cli.produce)
    main.add_command(config_doc.config_reference)


_register_commands()


if __name__ == "__main__":
    main()
