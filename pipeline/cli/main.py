"""The ``connect-pipeline`` command line. Each command lives in its own module,
imported only when that command runs or is listed (``LazyCommands``): ``run`` starts
without the other commands' imports. ``--help`` and a mistyped name list every name;
only ``--help`` imports them all (for their summaries).

Development commands (demo, produce, chaos) are not part of the product: the
``connect-pipeline-dev`` distribution (``dev/``) adds them through the
``connect_pipeline.commands`` entry-point group, so the production image has none.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Final

import click

from pipeline import __version__

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

PLUGIN_GROUP: Final = "connect_pipeline.commands"

#: name -> "module:attribute" of each built-in command
COMMANDS: Final = {
    "avro": "pipeline.cli.avro:avro",
    "check": "pipeline.cli.check:check",
    "run": "pipeline.cli.run:run",
    "replay": "pipeline.cli.replay:replay",
    "redrive": "pipeline.cli.redrive:redrive",
    "config-reference": "pipeline.cli.config_reference:config_reference",
    "dlq": "pipeline.cli.dlq:dlq",
}


def _entry_points(group: str) -> dict[str, EntryPoint]:
    # importlib.metadata scans every installed distribution (~50 ms): only when needed
    from importlib.metadata import entry_points

    return {entry.name: entry for entry in entry_points(group=group)}


class LazyCommands(MutableMapping[str, click.Command]):
    """``click.Group.commands`` that imports a command on its first lookup.

    Built-in names are known without importing anything; plugin names (an
    entry-point group) are read only when a name is not built in or all are listed.
    """

    def __init__(self, builtin: Mapping[str, str], plugin_group: str) -> None:
        self._builtin: Final = dict(builtin)
        self._plugin_group = plugin_group
        self._plugins: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, click.Command] = {}

    def _plugin_entries(self) -> dict[str, EntryPoint]:
        if self._plugins is None:
            self._plugins = _entry_points(self._plugin_group)
        return self._plugins

    def _names(self) -> list[str]:
        names = dict.fromkeys(self._builtin)
        names.update(dict.fromkeys(self._plugin_entries()))
        names.update(dict.fromkeys(self._loaded))
        return list(names)

    def __getitem__(self, name: str) -> click.Command:
        command = self._loaded.get(name)
        if command is None:
            command = self._load(name)
            self._loaded[name] = command
        return command

    def _load(self, name: str) -> click.Command:
        target = self._builtin.get(name)
        if target is not None:
            module, _, attribute = target.partition(":")
            command = getattr(importlib.import_module(module), attribute)
        else:
            entry = self._plugin_entries().get(name)
            if entry is None:
                raise KeyError(name)
            command = entry.load()
        if not isinstance(command, click.Command):
            raise TypeError(f"{name}: {target or self._plugin_group} is not a click command")
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        found = self._loaded.pop(name, None) is not None
        found |= self._builtin.pop(name, None) is not None
        found |= self._plugin_entries().pop(name, None) is not None
        if not found:
            raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            name in self._loaded or name in self._builtin or name in self._plugin_entries()
        )


@click.group(commands=LazyCommands(COMMANDS, PLUGIN_GROUP))
@click.version_option(__version__, prog_name="connect-pipeline")
def main() -> None:
    """Kafka clickstream events to Connect createSignals calls."""


if __name__ == "__main__":
    main()
