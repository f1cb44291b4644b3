"""The operations commands: the generated configuration reference, the demo producer."""

from __future__ import annotations

import uuid

from click.testing import CliRunner

from pipeline.cli.config_reference import DEFAULT_PATH, render_reference
from pipeline.cli.main import main
from pipeline.config import Settings
from tests.integration.consumer_harness import read_topic


def test_configuration_reference_is_current():
    # stale? run `connect-pipeline config-reference` and commit docs/configuration.md
    assert DEFAULT_PATH.read_text() == render_reference()
    result = CliRunner().invoke(main, ["config-reference", "--check"])
    assert result.exit_code == 0, result.output


def test_configuration_reference_names_every_setting_and_hides_no_secret():
    text = render_reference()
    for name in Settings.model_fields:
        assert f"`PIPELINE_{name.upper()}`" in text
    assert "| `PIPELINE_CONNECT_API_KEY` | secret (optional) | unset |" in text


def test_stale_reference_fails_the_check(tmp_path):
    stale = tmp_path / "configuration.md"
    stale.write_text(render_reference().replace("Consumer group id.", "Old words."))
    result = CliRunner().invoke(main, ["config-reference", "--check", "--out", str(stale)])
    assert result.exit_code == 1


def test_produce_writes_the_demo_clickstream(kafka_bootstrap):
    topic = f"produced-{uuid.uuid4().hex[:8]}"
    args = ["produce", "--bootstrap-servers", kafka_bootstrap, "--topic", topic]
    result = CliRunner().invoke(main, [*args, "--events", "60", "--partitions", "2"])
    assert result.exit_code == 0, result.output
    records = read_topic(kafka_bootstrap, topic, 60)
    assert len(records) == 60
    assert all(r.value()[:2] == b"\xc3\x01" for r in records)  # single-object encoding


def test_run_refuses_an_unknown_variable_and_names_it():
    """A typo'd variable is not ignored: `run` stops before connecting to anything."""
    import subprocess

    from devtools.stack import RUN_COMMAND, pipeline_environment

    env = pipeline_environment(
        {
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "PIPELINE_TOPICS": "clicks",
            "PIPELINE_DLQ_TOPICS": "clicks-dlq",  # the setting is PIPELINE_DLQ_TOPIC
        }
    )
    done = subprocess.run(
        [*RUN_COMMAND, "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "PIPELINE_DLQ_TOPICS: unknown setting; did you mean PIPELINE_DLQ_TOPIC?" in done.stderr


def test_replay_names_a_topic_or_partition_the_broker_does_not_have(kafka_bootstrap):
    """The range is checked before anything is read: a usage error (exit 2) naming it."""
    from devtools.stack import pipeline_environment

    topic = f"replayed-{uuid.uuid4().hex[:8]}"
    produced = ["produce", "--bootstrap-servers", kafka_bootstrap, "--topic", topic]
    assert (
        CliRunner().invoke(main, [*produced, "--events", "4", "--partitions", "2"]).exit_code == 0
    )
    env = pipeline_environment(
        {"PIPELINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PIPELINE_TOPICS": topic}
    )
    missing = CliRunner().invoke(
        main, ["replay", "--topic", f"{topic}-nope", "--from-offset", "0"], env=env
    )
    assert missing.exit_code == 2, missing.output
    assert f"topic '{topic}-nope' does not exist" in missing.output
    no_partition = CliRunner().invoke(
        main, ["replay", "--topic", topic, "--partition", "7", "--from-offset", "0"], env=env
    )
    assert no_partition.exit_code == 2, no_partition.output
    assert f"{topic} has no partition [7]" in no_partition.output
