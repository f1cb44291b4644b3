"""A ledger (or session changelog) topic that refuses every write: stop uncommitted,
naming the topic.

Before, a transaction aborted and re-read the same records for ever (the refused
ledger records rewritten into each new transaction), and without transactions the
writes were retried for ever while the offsets never moved: a run that looked busy
or idle and committed nothing. A Tansu broker of its own validates every record of
``strict-ledger`` and ``strict-sessions`` (the changelog of group ``strict``) against
a JSON schema no record meets (INVALID_RECORD).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from devtools.clickstream import clickstream

from pipeline.config import Settings
from pipeline.kafka.consumer import SignalConsumer
from pipeline.kafka.ledger import duplicate_bound
from pipeline.kafka.ledger_writer import LedgerUnwritable
from pipeline.kafka.lifecycle import ChangelogUnwritable
from pipeline.kafka.runner import build_processor
from pipeline.kafka.transactions import TransactionRefused
from tests.faults.strict_topics import committed, strict_broker
from tests.integration.connect_stub import connect_stub
from tests.integration.consumer_harness import (
    consumer_process,
    expected_signals,
    new_topics,
    produce,
    run_until_idle,
    settings_for,
)

pytestmark = pytest.mark.integration

STRICT_LEDGER = "strict-ledger"
STRICT_GROUP = "strict"  # its session changelog: strict-sessions
STRICT_TOPICS = (STRICT_LEDGER, f"{STRICT_GROUP}-sessions")
#: Long enough for the stop; a run that never stops is stopped here and fails.
GIVE_UP_S = 45.0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with strict_broker(tmp_path_factory.mktemp("tansu-strict-ledger"), STRICT_TOPICS) as bootstrap:
        yield bootstrap


def run_until_stopped(settings: Settings, stopped: type[Exception], match: str) -> None:
    """One consumer run that must stop with ``stopped``; one that runs on is stopped
    after GIVE_UP_S (and fails)."""
    consumer = SignalConsumer(settings, build_processor(settings))
    give_up = threading.Timer(GIVE_UP_S, consumer.stop)
    give_up.start()
    try:
        with pytest.raises(stopped, match=match):
            consumer.run(stop_after_idle_s=GIVE_UP_S)
    finally:
        give_up.cancel()


@pytest.mark.parametrize("transactions", [True, False], ids=["transactions", "plain"])
def test_a_refused_ledger_write_stops_uncommitted_and_a_restart_delivers_everything(
    strict: str, transactions: bool
) -> None:
    bootstrap = strict
    events = list(clickstream(60, seed=23, invalid_ratio=0, v1_ratio=0))
    topic, dlq = new_topics(bootstrap, partitions=1)
    produce(bootstrap, topic, events)
    group = f"group-{uuid.uuid4().hex[:8]}"
    with connect_stub() as connect:
        settings = settings_for(
            bootstrap,
            topic,
            dlq,
            connect.url,
            group_id=group,
            ledger_topic=STRICT_LEDGER,
            transactions=transactions,
            transactional_id=f"txn-{uuid.uuid4().hex[:8]}",
        )
        run_until_stopped(settings, LedgerUnwritable, f"'{STRICT_LEDGER}' refused a record")
        assert committed(bootstrap, group, topic) <= 0  # nothing past the first record

        again = settings.model_copy(update={"ledger_topic": f"{topic}-ledger"})
        summary = run_until_idle(again, idle_s=2.0)
        expected = expected_signals(events)
        assert set(connect.accepted) == set(expected)
        # the stopped run's deliveries come again with their keys (Connect keeps them)
        assert connect.duplicates <= duplicate_bound(settings)
    assert summary.dead_lettered_total == 0
    assert committed(bootstrap, group, topic) == len(events)


def test_connect_pipeline_run_exits_non_zero_naming_the_refusing_ledger_topic(
    strict: str, tmp_path: Path
) -> None:
    """The process, as Kubernetes sees it: a non-zero exit and the reason in its log."""
    events = list(clickstream(30, seed=31, invalid_ratio=0, v1_ratio=0))
    topic, dlq = new_topics(strict, partitions=1)
    produce(strict, topic, events)
    with connect_stub() as connect:
        settings = settings_for(
            strict,
            topic,
            dlq,
            connect.url,
            ledger_topic=STRICT_LEDGER,
            transactional_id=f"txn-{uuid.uuid4().hex[:8]}",
        )
        log_path = tmp_path / "run.log"
        process = consumer_process(settings, log_path)
        try:
            code = process.wait(GIVE_UP_S)
        finally:
            process.kill()
    output = log_path.read_text()
    assert code != 0
    assert f"ledger topic '{STRICT_LEDGER}' refused a record" in output
    assert "INVALID_RECORD" in output
    assert committed(strict, settings.group_id, topic) <= 0


@pytest.mark.parametrize(
    ("transactions", "stopped"),
    [(True, TransactionRefused), (False, ChangelogUnwritable)],
    ids=["transactions", "plain"],
)
def test_a_refused_session_changelog_write_stops_uncommitted(
    strict: str, transactions: bool, stopped: type[Exception]
) -> None:
    """In a transaction the commit fails, and is not aborted and re-read for ever;
    without one the offsets were committed past changelog records that never landed
    (the sessions' state lost on a restart)."""
    bootstrap = strict
    events = list(clickstream(60, seed=29, invalid_ratio=0, v1_ratio=0))
    topic, dlq = new_topics(bootstrap, partitions=1)
    produce(bootstrap, topic, events)
    with connect_stub() as connect:
        settings = settings_for(
            bootstrap,
            topic,
            dlq,
            connect.url,
            group_id=STRICT_GROUP,
            ledger_topic=f"{topic}-ledger",
            derive_abandonment="both",
            transactions=transactions,
            transactional_id=f"txn-{uuid.uuid4().hex[:8]}",
        )
        run_until_stopped(settings, stopped, f"{STRICT_GROUP}-sessions")
    assert committed(bootstrap, STRICT_GROUP, topic) <= 0
