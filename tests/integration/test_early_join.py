"""``connect-pipeline run`` joins the group first and builds the rest while the join
waits (pipeline/kafka/group_join.py); a warm-up that fails meanwhile changes nothing.
The embedded broker, a real HTTP server for Connect, a real ``connect-pipeline run``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient
from devtools.clickstream import clickstream
from devtools.stack import start_pipeline, stop_process

from pipeline.kafka.group_join import JoiningConsumer
from tests.integration.connect_stub import connect_stub
from tests.integration.consumer_harness import (
    REPO,
    expected_signals,
    new_topics,
    produce,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration

#: A cavro whose first import fails as no import should (the warm-up's) and whose
#: second is simply absent (the decoder's: it then reads with fastavro).
BROKEN_CAVRO = """
import builtins
if not getattr(builtins, "_t2_cavro_tried", False):
    builtins._t2_cavro_tried = True
    raise RuntimeError("cavro warm-up broke on purpose")
raise ImportError("no cavro")
"""


def _stable(bootstrap: str, group: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    found = admin.describe_consumer_groups([group])[group].result(10)
    return bool(found.state == ConsumerGroupState.STABLE)


def test_the_join_completes_before_anyone_consumes_and_callbacks_wait_for_attach(
    kafka_bootstrap,
):
    topic, dlq = new_topics(kafka_bootstrap)
    settings = settings_for(
        kafka_bootstrap, topic, dlq, "http://127.0.0.1:9/graphql",
        kafka_config={"statistics.interval.ms": "200"},
    )  # fmt: skip
    joined = JoiningConsumer(settings)
    assigned: list[TopicPartition] = []
    revoked: list[TopicPartition] = []
    stats: list[str] = []

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert consumer is joined
        assigned.extend(partitions)

    def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked.extend(partitions)

    try:
        # nobody polls: the join goes on on librdkafka's thread
        wait_for(lambda: _stable(kafka_bootstrap, settings.group_id), 30, "a stable group")
        assert joined.assignment() == []  # the assignment waits for consume()
        joined.attach(on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
        joined.on_stats(stats.append)
        deadline = time.monotonic() + 30
        while (not assigned or not stats) and time.monotonic() < deadline:
            joined.consume(1, timeout=0.1)
        assert sorted(tp.partition for tp in assigned) == [0, 1, 2]
        assert revoked == []
        assert json.loads(stats[-1])["type"] == "consumer"
    finally:
        joined.close()


def test_a_start_that_fails_before_attach_leaves_the_group_at_once(kafka_bootstrap):
    topic, dlq = new_topics(kafka_bootstrap)
    settings = settings_for(kafka_bootstrap, topic, dlq, "http://127.0.0.1:9/graphql")
    joined = JoiningConsumer(settings)
    group = settings.group_id
    wait_for(lambda: _stable(kafka_bootstrap, group), 30, "a stable group")
    joined.close()  # runner.run's path when the consumer could not be built
    wait_for(lambda: not _stable(kafka_bootstrap, group), 5, "the member left")


def test_run_joins_first_and_survives_a_failed_warm_up(kafka_bootstrap, tmp_path: Path):
    topic, dlq = new_topics(kafka_bootstrap)
    events = list(clickstream(30, invalid_ratio=0))
    produce(kafka_bootstrap, topic, events)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "cavro.py").write_text(BROKEN_CAVRO)
    log = tmp_path / "run.log"
    with connect_stub() as stub:
        settings = settings_for(kafka_bootstrap, topic, dlq, stub.url, log_level="INFO")
        path = os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))
        process = start_pipeline(settings, log, extra_env={"PYTHONPATH": path}, cwd=REPO)
        try:
            expected = set(expected_signals(events))
            wait_for(lambda: set(stub.accepted) >= expected, 60, f"all accepted; see {log}")
        finally:
            status = stop_process(process)
    assert status == 0, log.read_text()
    assert stub.duplicates == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    failed = [line for line in lines if line.get("event") == "warm-up failed"]
    assert [line["warm_up"] for line in failed] == ["cavro-import"]
    assert "broke on purpose" in failed[0]["error"]
