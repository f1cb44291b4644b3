"""`connect-pipeline run` imports what it needs only: lazy commands, no graphql-core."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from pipeline.cli.main import COMMANDS, PLUGIN_GROUP, LazyCommands, main
from pipeline.connect.document import CREATE_SIGNALS, printed_create_signals

#: modules `run` must not import before it runs (another command's, dev tools, graphql)
NOT_ON_THE_RUN_PATH = (
    "graphql",
    "devtools",
    "pipeline.cli.avro",
    "pipeline.cli.check",
    "pipeline.cli.dlq",
    "pipeline.cli.replay",
    "pipeline.cli.redrive",
    "pipeline.cli.config_reference",
)

_PROBE = """
import json, sys
from pipeline.cli.main import main
from pipeline.kafka import runner  # what `run` imports before it starts consuming
from pipeline.kafka import consumer
try:
    main(["run", "--help"])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def test_the_kept_document_is_what_graphql_core_prints():
    assert printed_create_signals() == CREATE_SIGNALS


def test_run_imports_no_other_command_no_dev_tool_and_no_graphql():
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    modules = set(json.loads(done.stdout.splitlines()[-1]))
    assert "pipeline.cli.run" in modules
    assert "pipeline.connect.client" in modules
    loaded = {m for m in modules if _under(m, NOT_ON_THE_RUN_PATH)}
    assert loaded == set()


def test_help_lists_every_command_and_the_dev_plugins():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in [*COMMANDS, "demo", "produce", "chaos"]:
        assert f"  {name} " in result.output


def test_a_plugin_command_loads_when_invoked():
    result = CliRunner().invoke(main, ["produce", "--help"])
    assert result.exit_code == 0, result.output
    assert "--bootstrap-servers" in result.output


def test_a_mistyped_command_is_named_with_a_suggestion():
    result = CliRunner().invoke(main, ["rnu"])
    assert result.exit_code == 2
    assert "Did you mean 'run'?" in result.output


def test_lazy_commands_load_once_and_know_names_without_importing():
    commands = LazyCommands({"run": "pipeline.cli.run:run"}, "no.such.group")
    assert "run" in commands and "nope" not in commands
    assert list(commands) == ["run"]
    first = commands["run"]
    assert isinstance(first, click.Command) and commands["run"] is first
    with pytest.raises(KeyError):
        commands["nope"]


def test_a_target_that_is_not_a_command_is_refused():
    commands = LazyCommands({"bad": "pipeline.cli.main:COMMANDS"}, PLUGIN_GROUP)
    with pytest.raises(TypeError, match="not a click command"):
        commands["bad"]


def test_cavro_is_imported_on_a_thread_when_the_decoder_may_use_it():
    from pipeline.codec import accelerated
    from pipeline.config import Settings
    from pipeline.kafka.runner import preload_accelerated

    assert preload_accelerated(Settings(topics=["clicks"], avro_decoder="fastavro")) is None
    thread = preload_accelerated(Settings(topics=["clicks"], avro_decoder="auto"))
    assert thread is not None and thread.name == "cavro-import"
    thread.join(30)
    assert not thread.is_alive()
    assert accelerated.available()
    assert "cavro" in sys.modules


def test_a_warm_up_that_fails_is_logged_and_forgotten(monkeypatch: pytest.MonkeyPatch):
    import threading

    from structlog.testing import capture_logs

    from pipeline.kafka.runner import warm_up

    uncaught: list[object] = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)

    def broken() -> None:
        raise OSError("no route to the warm-up")

    with capture_logs() as logs:
        thread = warm_up("broken-warm-up", broken)
        thread.join(10)
    assert not thread.is_alive() and uncaught == []
    assert [(e["event"], e["warm_up"]) for e in logs] == [("warm-up failed", "broken-warm-up")]
    assert "no route to the warm-up" in logs[0]["error"]
