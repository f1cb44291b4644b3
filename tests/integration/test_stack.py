"""The development stack (devtools.stack): ports, the broker variable, topics, processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient
from devtools.stack import (
    BOOTSTRAP_ENV,
    OLD_BOOTSTRAP_ENV,
    create_topics,
    external_bootstrap,
    free_ports,
    new_topics,
    pipeline_environment,
    start_pipeline,
    stop_process,
)

from pipeline.config import Settings


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(40)
    assert len(set(ports)) == 40
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if taken


def test_one_variable_names_the_external_broker_and_the_old_one_still_works():
    assert external_bootstrap({}) is None
    assert external_bootstrap({BOOTSTRAP_ENV: "k:9092", OLD_BOOTSTRAP_ENV: "old:1"}) == "k:9092"
    with pytest.warns(FutureWarning, match=BOOTSTRAP_ENV):
        assert external_bootstrap({OLD_BOOTSTRAP_ENV: "old:1"}) == "old:1"


def test_a_child_gets_its_settings_and_none_of_the_parents_pipeline_variables():
    settings = Settings(kafka_bootstrap_servers="k:1", topics=["t"], batch_max_signals=7)
    base = {"PATH": "/bin", "PIPELINE_DLQ_TOPIC": "leaked", "PIPELINE_TYPO": "x"}
    env = pipeline_environment(settings, {"PYTHONUNBUFFERED": "1"}, base=base)
    assert env["PATH"] == "/bin" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PIPELINE_BATCH_MAX_SIGNALS"] == "7" and env["PIPELINE_TOPICS"] == '["t"]'
    assert "PIPELINE_TYPO" not in env and env.get("PIPELINE_DLQ_TOPIC") != "leaked"
    assert pipeline_environment({"PIPELINE_TOPICS": "a"}, base=base)["PIPELINE_TOPICS"] == "a"


@pytest.mark.integration
def test_topics_are_in_the_metadata_when_create_returns(kafka_bootstrap):
    name = f"stack-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {name: 3, f"{name}-b": 1})
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert len(topics[name].partitions) == 3 and len(topics[f"{name}-b"].partitions) == 1
    create_topics(kafka_bootstrap, {name: 3})  # one that exists is left as it is
    topic, dlq = new_topics(kafka_bootstrap, "stack", 2)
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert dlq == f"{topic}-dlq" and topic.startswith("stack-")
    assert len(topics[topic].partitions) == 2 and len(topics[dlq].partitions) == 1


@pytest.mark.integration
def test_a_pipeline_process_starts_configured_by_settings_and_stops_on_sigterm(
    kafka_bootstrap, tmp_path: Path
):
    topic, dlq = new_topics(kafka_bootstrap, "stack-run", 1)
    (port,) = free_ports(1)
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topics=[topic],
        dlq_topic=dlq,
        group_id=f"group-{topic}",
        connect_url="http://127.0.0.1:9/graphql",  # never called: the topic stays empty
        connect_api_key="k",
        default_app_key="a",
        session_timeout_ms=6000,
        http_port=port,
    )
    log = tmp_path / "run.log"
    process = start_pipeline(settings, log)
    try:
        deadline = time.monotonic() + 60
        live = False
        while not live and time.monotonic() < deadline and process.poll() is None:
            try:  # the port it serves on came only from the settings given
                live = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert live, log.read_text(errors="replace")[-2000:]
    finally:
        code = stop_process(process, timeout_s=30)
    assert code == 0, log.read_text(errors="replace")[-2000:]


def test_a_process_that_ignores_sigterm_is_killed_and_reported_as_hung():
    ignores = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"  # noqa: E501
    process = subprocess.Popen([sys.executable, "-c", ignores], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    assert stop_process(process, timeout_s=0.5) is None
    assert process.returncode == -signal.SIGKILL
