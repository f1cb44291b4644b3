"""Issue 14, a fault during the ledger load: SIGKILL while `connect-pipeline run` reads a
large ledger. The pod is live and not ready meanwhile; the restart loses nothing and
sends nothing Connect has (format-1 records, written before the upgrade, included).

Real broker, `connect-pipeline run` as a process with its ops endpoint, the simulator
over HTTP with its server-side idempotency OFF (every signal sent twice is counted).
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from devtools.clickstream import clickstream
from devtools.stack import free_port

from pipeline.kafka.ledger import ensure_ledger_topic, ledger_value
from tests.integration.consumer_harness import (
    consumer_process,
    expected_signals,
    new_topics,
    produce,
    settings_for,
    wait_for,
)
from tests.integration.ledger_harness import (  # noqa: F401  (fixtures)
    module_simulator_fixture,
    simulator_fixture,
    write_ledger,
)

pytestmark = pytest.mark.integration

OLD_RECORDS = 300_000  # format 1, no horizon: the whole retention is read
WEEK_MS = 7 * 24 * 3_600_000


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


def test_a_kill_during_the_ledger_load_loses_nothing_and_sends_nothing_twice(
    kafka_bootstrap, simulator, tmp_path
):
    events = list(clickstream(500, seed=143, invalid_ratio=0))
    keys = list(expected_signals(events))
    assert len(keys) == len(events)
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce(kafka_bootstrap, topic, events)
    port = free_port()
    settings = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, http_port=port, http_host="127.0.0.1"
    )
    ensure_ledger_topic(
        {"bootstrap.servers": kafka_bootstrap}, settings.ledger_topic_name, 1, WEEK_MS
    )
    now = int(time.time() * 1000)
    # Before the upgrade: a week of keys, and the first 100 events, delivered.
    old = [(f"old-{n:09d}", ledger_value(now - n)) for n in range(OLD_RECORDS)]
    delivered = [(key, ledger_value(now)) for key in keys[:100]]
    write_ledger(kafka_bootstrap, settings.ledger_topic_name, [*old, *delivered])

    first = consumer_process(settings, tmp_path / "first.log")
    try:
        seen: list[tuple[int, dict[str, Any], int, dict[str, Any]]] = []

        def loading() -> bool:
            live, health = probe(port, "/healthz")
            ready, readiness = probe(port, "/readyz")
            seen.append((live, health, ready, readiness))
            return live == 200 and health.get("ledger_loading", 0) > 0

        wait_for(loading, 60, "the ledger load in progress")
        _, _, ready, readiness = seen[-1]
        assert ready == 503 and readiness["ledger_loaded"] is False  # not ready meanwhile
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert simulator.stats()["accepted"] == 0  # killed before a record was handled

    second = consumer_process(settings, tmp_path / "second.log")
    try:
        wait_for(lambda: simulator.stats()["accepted"] >= 400, 90, "the restart delivered")
        wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "ready after the load")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)

    stats = simulator.stats()
    assert stats["accepted"] == 400 and stats["duplicates"] == 0
    assert {row["key"] for row in simulator.signals()} == set(keys[100:])
