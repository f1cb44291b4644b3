"""The ``connect-pipeline`` command line. Each command lives in its own module,
imported only when that command runs or is listed (``pipeline.cli.lazy``): ``run``
starts without the other commands' imports.

Development commands (demo, produce, chaos) are not part of the product: the
``connect-pipeline-dev`` distribution (``dev/``) adds them through the
``connect_pipeline.commands`` entry-point group, so the production image has none.
"""

from __future__ import annotations

from typing import Final

import click

from pipeline import __version__
from pipeline.cli.lazy import LazyCommands

PLUGIN_GROUP: Final = "connect_pipeline.commands"

#: name -> where the command is; the order is --help's
COMMANDS: Final = {
    "avro": "pipeline.cli.avro:avro",
    "check": "pipeline.cli.check:check",
    "run": "pipeline.cli.run:run",
    "replay": "pipeline.cli.replay:replay",
    "redrive": "pipeline.cli.redrive:redrive",
    "config-reference": "pipeline.cli.config_reference:config_reference",
    "dlq": "pipeline.cli.dlq:dlq",
}


@click.group(commands=LazyCommands(COMMANDS, PLUGIN_GROUP))
@click.version_option(__version__, prog_name="connect-pipeline")
def main() -> None:
    """Kafka clickstream events to Connect createSignals calls."""


if __name__ == "__main__":
    main()
