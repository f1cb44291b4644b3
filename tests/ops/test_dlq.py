"""`connect-pipeline dlq`: a read-only view of the dead-letter topic on a real broker.

Dead letters are written with the production header builder and chosen timestamps,
so the time filters and the oldest/newest figures have exact expected values.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from devtools.clickstream import clickstream
from devtools.producer import EventEncoder
from devtools.stack import create_topics

from pipeline.cli.main import main
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.kafka.dead_letter_view import iso
from pipeline.kafka.dead_letters import Source, dead_letter_headers
from pipeline.signals.outcomes import Problem, Reason, Rejection

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
DAY_MS = 86_400_000


def _write(bootstrap: str, dlq: str) -> list[dict]:
    """Five dead letters from two source topics, one of them redriven once."""
    valid = next(e for e in clickstream(50, seed=5, invalid_ratio=0) if e.edition == 2)
    encoded = EventEncoder(DEFAULT_AVRO_DIR).encode(valid)
    currency = Problem("items[0].currency", "'XX' is not ISO 4217")
    plan = [
        # (source topic, offset, reason, problems, value, dead-lettered at, attempt)
        ("shop-a", 10, Reason.VALIDATION, (currency,), encoded, NOW_MS - 3 * DAY_MS, 1),
        ("shop-a", 11, Reason.VALIDATION, (Problem("items[1].sku", "required"),), encoded,
         NOW_MS - 3_600_000, 1),
        ("shop-b", 3, Reason.UNDECODABLE, (Problem("", "unknown framing"),), b"garbage",
         NOW_MS - 60_000, 1),
        ("shop-b", 4, Reason.UNKNOWN_SCHEMA, (Problem("", "schema id 99"),), b"\x00\x00\x00\x00c",
         NOW_MS - 30_000, 1),
        ("shop-a", 12, Reason.API_REJECTED, (Problem("email", "rejected"),), encoded,
         NOW_MS - 10_000, 2),
    ]  # fmt: skip
    producer = Producer({"bootstrap.servers": bootstrap})
    written = []
    for topic, offset, reason, problems, value, at, attempt in plan:
        source = Source(
            topic, 0, offset, at - 5_000, b"session-1", value,
            (("traceparent", b"00-abc-def-01"), ("odd", b"\xff\xfe")),
        )  # fmt: skip
        headers = dead_letter_headers(Rejection(reason, problems), source, "g", attempt)
        if attempt > 1:  # a redriven record carries the previous attempt's headers first
            earlier = dead_letter_headers(
                Rejection.single(Reason.VALIDATION, "old.field", "x"), source, "g", attempt - 1
            )
            headers = earlier + headers
        producer.produce(dlq, value=value, key=b"session-1", headers=headers, timestamp=at)
        written.append({"topic": topic, "offset": offset, "reason": str(reason), "at": at})
    assert producer.flush(30) == 0
    return written


@pytest.fixture(scope="module")
def dead_letters(kafka_bootstrap):
    dlq = f"dlq-view-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {dlq: 2})
    written = _write(kafka_bootstrap, dlq)
    env = {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "PIPELINE_TOPICS": "shop-a,shop-b",
        "PIPELINE_DLQ_TOPIC": dlq,
        "PIPELINE_GROUP_ID": f"group-{dlq}",
    }
    return env, written


def _cli(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, ["dlq", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_summary_counts_by_reason_field_and_source_topic_with_oldest_and_newest(dead_letters):
    env, written = dead_letters
    summary = json.loads(_cli(env, "summary", "--json"))
    assert summary["count"] == 5
    assert summary["by_reason"] == {
        "validation": 2,
        "undecodable": 1,
        "unknown_schema": 1,
        "api_rejected": 1,  # the redriven record counts once, by its latest attempt
    }
    assert summary["by_field"]["(whole event)"] == 2
    assert summary["by_field"]["items[0].currency"] == 1
    assert summary["oldest"] == iso(written[0]["at"])
    assert summary["newest"] == iso(written[-1]["at"])
    shop_a, shop_b = summary["by_source_topic"]["shop-a"], summary["by_source_topic"]["shop-b"]
    assert (shop_a["count"], shop_b["count"]) == (3, 2)
    assert shop_b["by_reason"] == {"undecodable": 1, "unknown_schema": 1}
    assert shop_b["oldest"] == iso(written[2]["at"])
    # the text form, the default command, says the same
    text = _cli(env)
    assert text.startswith(f"dead-letter topic {env['PIPELINE_DLQ_TOPIC']}: 5 records")
    assert "source topic shop-b: 2" in text


def test_show_filters_by_reason_field_time_and_topic_and_decodes_values(dead_letters):
    env, written = dead_letters
    lines = [json.loads(x) for x in _cli(env, "show", "--reason", "validation").splitlines()]
    assert [x["source"]["offset"] for x in lines] == [10, 11]
    first = lines[0]
    assert first["field"] == "items[0].currency" and "ISO 4217" in first["message"]
    assert first["value"]["schema"].startswith("connect.signals.")
    assert first["value"]["record"]["eventId"]
    assert first["headers"]["traceparent"] == "00-abc-def-01"
    assert first["headers"]["odd"] == {"base64": "//4="}  # not UTF-8: still shown
    assert first["key"] == "session-1" and first["source"]["topic"] == "shop-a"

    by_field = _cli(env, "show", "--field", "items")  # a parent of items[0]... and items[1]...
    assert len(by_field.splitlines()) == 2
    recent = [json.loads(x) for x in _cli(env, "show", "--since", "2h").splitlines()]
    assert sorted(x["source"]["offset"] for x in recent) == [3, 4, 11, 12]
    until = _cli(env, "show", "--until", iso(written[0]["at"]) or "")
    assert [json.loads(x)["source"]["offset"] for x in until.splitlines()] == [10]

    raw = [json.loads(x) for x in _cli(env, "show", "--source-topic", "shop-b").splitlines()]
    garbage = next(x for x in raw if x["reason"] == "undecodable")
    assert "value" not in garbage and garbage["value_base64"] == "Z2FyYmFnZQ=="
    assert garbage["value_error"].startswith("undecodable")

    redriven = json.loads(_cli(env, "show", "--reason", "api_rejected"))
    assert redriven["attempt"] == 2 and redriven["field"] == "email"
    assert len(_cli(env, "show", "--limit", "2").splitlines()) == 2


def test_the_view_is_read_only(dead_letters, kafka_bootstrap):
    env, _ = dead_letters
    before = _cli(env, "summary", "--json")
    assert _cli(env, "summary", "--json") == before  # nothing consumed away
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    groups = admin.list_consumer_groups().result(30).valid
    assert not [g.group_id for g in groups if "dlq-view" in g.group_id]


def test_a_missing_dead_letter_topic_is_named(kafka_bootstrap):
    env = {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "PIPELINE_TOPICS": "x",
        "PIPELINE_DLQ_TOPIC": f"missing-{uuid.uuid4().hex[:8]}",
    }
    result = CliRunner().invoke(main, ["dlq"], env=env)
    assert result.exit_code == 1
    assert "not found" in result.output and env["PIPELINE_DLQ_TOPIC"] in result.output


def test_time_and_field_rules():
    from pipeline.kafka.dead_letter_view import field_matches, parse_time

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_time("15m", now) == int((now - timedelta(minutes=15)).timestamp() * 1000)
    assert parse_time("2026-11-30T10:00:00Z", now) == parse_time("2026-11-30T10:00:00", now)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday", now)
    assert field_matches("items[0].sku", "items") and field_matches("items", "items")
    assert not field_matches("itemsCount", "items")


def test_show_decodes_with_the_schema_id_a_header_carries(kafka_bootstrap):
    """A dead letter keeps its source headers; a schema id among them decides the decode
    (here a malformed one: the view says so instead of decoding the framed value)."""
    dlq = f"dlq-header-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {dlq: 1})
    valid = next(e for e in clickstream(20, seed=7, invalid_ratio=0) if e.edition == 2)
    encoded = EventEncoder(DEFAULT_AVRO_DIR).encode(valid)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for offset, schema_header in ((0, b"\x05\x00\x00\x00\x01"), (1, None)):
        source_headers = [] if schema_header is None else [("__value_schema_id", schema_header)]
        source = Source("shop-h", 0, offset, NOW_MS, b"k", encoded, tuple(source_headers))
        rejection = Rejection.single(Reason.UNDECODABLE, "", "bad schema id header")
        headers = dead_letter_headers(rejection, source, "g", 1)  # the source's own first
        producer.produce(dlq, value=encoded, headers=headers, timestamp=NOW_MS)
    assert producer.flush(30) == 0
    env = {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "PIPELINE_TOPICS": "shop-h",
        "PIPELINE_DLQ_TOPIC": dlq,
        "PIPELINE_GROUP_ID": f"group-{dlq}",
    }
    shown = [json.loads(x) for x in _cli(env, "show").splitlines()]
    with_header, without = sorted(shown, key=lambda x: x["source"]["offset"])
    assert "value" not in with_header
    assert "__value_schema_id" in with_header["value_error"]
    assert "magic byte" in with_header["value_error"]
    assert without["value"]["record"]["eventId"] == valid.record["eventId"]
