"""Registering avro/ with a Schema Registry: subjects, order, compatibility, refusals.

Against confluent-kafka's in-process mock registry (``mock://``). The mock stores
subjects, versions and ids like a registry but has no compatibility endpoint (its
``test_compatibility`` is the HTTP client's, which cannot reach ``mock://``): the
local check is tested here for real, the registry's check only through a stub.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from devtools.clickstream import clickstream

from pipeline.cli.main import main
from pipeline.codec.avro import Decoded, EventDecoder, SchemaStore, encode_confluent
from pipeline.codec.registry import (
    Level,
    Status,
    SubjectStrategy,
    compatibility_problems,
    load_schemas,
    register,
    registration_plan,
    subject_name,
)
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.signals import catalog

SCHEMAS = load_schemas(DEFAULT_AVRO_DIR)
ORDER = "connect.signals.OrderEvent"
V1_RECORDS = sorted(f"connect.signals.{s.record_name}" for s in catalog.SIGNALS.values() if s.in_v1)


def _schema(edition: int, record: str) -> dict[str, Any]:
    return next(s for e, s in SCHEMAS if e == edition and f"{s['namespace']}.{s['name']}" == record)


def _mock() -> Any:
    return SchemaRegistryClient.new_client({"url": "mock://"})


def _with_required_field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    changed = copy.deepcopy(schema)
    changed["fields"].append({"name": name, "type": "string"})  # no default
    return changed


def test_subject_names_per_strategy() -> None:
    assert subject_name(SubjectStrategy.RECORD, ORDER, None) == ORDER
    assert subject_name(SubjectStrategy.TOPIC, ORDER, "clicks") == "clicks-value"
    assert subject_name(SubjectStrategy.TOPIC_RECORD, ORDER, "clicks") == f"clicks-{ORDER}"
    with pytest.raises(ValueError, match="needs a topic"):
        subject_name(SubjectStrategy.TOPIC, ORDER, None)


def test_plan_puts_every_earlier_edition_first() -> None:
    plan = registration_plan(SCHEMAS, SubjectStrategy.RECORD)
    assert len(plan) == 9 + 11
    assert [c.edition for c in plan] == [1] * 9 + [2] * 11
    orders = [c for c in plan if c.record_name == ORDER]
    assert [c.edition for c in orders] == [1, 2]
    only = registration_plan(SCHEMAS, SubjectStrategy.TOPIC, "orders", [ORDER])
    assert [(c.subject, c.edition) for c in only] == [("orders-value", 1), ("orders-value", 2)]


@pytest.mark.parametrize("record", V1_RECORDS)
def test_current_edition_reads_every_earlier_edition(record: str) -> None:
    v1, v2 = _schema(1, record), _schema(2, record)
    assert compatibility_problems(v2, [v1], Level.BACKWARD_TRANSITIVE) == []


def test_local_check_names_the_breaking_field() -> None:
    v1, v2 = _schema(1, ORDER), _schema(2, ORDER)
    bad = _with_required_field(v2, "loyaltyTier")
    problems = compatibility_problems(bad, [v1, v2], Level.BACKWARD_TRANSITIVE)
    assert len(problems) == 2  # against both versions
    assert all("loyaltyTier" in p for p in problems), problems
    assert "the latest version" in problems[-1]
    # Non-transitive levels compare with the latest only; NONE with nothing.
    assert len(compatibility_problems(bad, [v1, v2], Level.BACKWARD)) == 1
    assert compatibility_problems(bad, [v1, v2], Level.NONE) == []
    # FORWARD: the old reader must read the new data; a removed required field breaks it.
    dropped = copy.deepcopy(v2)
    dropped["fields"] = [f for f in v2["fields"] if f["name"] != "sessionId"]
    assert compatibility_problems(dropped, [v2], Level.BACKWARD) == []
    forward = compatibility_problems(dropped, [v2], Level.FORWARD)
    assert forward and "sessionId" in forward[0]


def test_local_check_ignores_other_records_in_the_subject() -> None:
    other = _schema(2, "connect.signals.PageViewEvent")
    assert compatibility_problems(_schema(2, ORDER), [other], Level.FULL_TRANSITIVE) == []


def test_registers_v1_before_v2_and_decodes_through_the_ids() -> None:
    client = _mock()
    plan = registration_plan(SCHEMAS, SubjectStrategy.RECORD)
    results = register(client, plan, registry_check=False)
    assert [r.status for r in results] == [Status.REGISTERED] * 20
    for record in V1_RECORDS:
        assert sorted(client.get_versions(record)) == [1, 2]
        history = [json.loads(client.get_version(record, v).schema.schema_str) for v in (1, 2)]
        assert history == [_schema(1, record), _schema(2, record)]
    assert client.get_versions("connect.signals.CartAbandonmentEvent") == [1]

    # An earlier-edition event framed with its registered id decodes in the current shape.
    v1_order = next(r for r in results if r.candidate.record_name == ORDER)
    assert v1_order.candidate.edition == 1 and v1_order.schema_id is not None
    event = next(
        e
        for e in clickstream(500, invalid_ratio=0, v1_ratio=1.0)
        if e.signal_type == "order" and e.edition == 1
    )
    record = event.record
    quantities = [i["quantity"] for i in record["orderedItems"]]
    value = encode_confluent(v1_order.schema_id, _schema(1, ORDER), record)
    decoded = EventDecoder(SchemaStore.from_directory(DEFAULT_AVRO_DIR), client).decode(value)
    assert isinstance(decoded, Decoded)
    assert decoded.record_name == ORDER and decoded.writer_key == f"id:{v1_order.schema_id}"
    assert [i["itemQuantity"] for i in decoded.record["orderedItems"]] == quantities


def test_second_run_registers_nothing_new() -> None:
    client = _mock()
    plan = registration_plan(SCHEMAS, SubjectStrategy.TOPIC_RECORD, "clicks")
    first = register(client, plan, registry_check=False)
    again = register(client, plan, registry_check=False)
    assert [r.status for r in again] == [Status.EXISTS] * 20
    assert [(r.schema_id, r.version) for r in again] == [(r.schema_id, r.version) for r in first]


def test_incompatible_schema_is_refused_and_nothing_is_registered() -> None:
    client = _mock()
    register(client, registration_plan(SCHEMAS, SubjectStrategy.RECORD), registry_check=False)
    before = {s: sorted(client.get_versions(s)) for s in client.get_subjects()}
    bad = _with_required_field(_schema(2, ORDER), "loyaltyTier")
    plan = registration_plan(
        [(2, _schema(2, "connect.signals.ErrorEvent")), (3, bad)], SubjectStrategy.RECORD
    )
    results = register(client, plan, registry_check=False)
    assert [r.status for r in results] == [Status.REFUSED]
    assert results[0].candidate.subject == ORDER
    assert "loyaltyTier" in results[0].message and "BACKWARD_TRANSITIVE" in results[0].message
    assert {s: sorted(client.get_versions(s)) for s in client.get_subjects()} == before


def test_mock_registry_has_no_compatibility_endpoint() -> None:
    """If a future confluent-kafka's mock answers this, test the registry check for real."""
    client = SchemaRegistryClient.new_client({"url": "mock://", "max.retries": 0})
    schema = Schema(json.dumps(_schema(2, ORDER)), "AVRO")
    client.register_schema(ORDER, schema)
    with pytest.raises(Exception, match="protocol"):
        client.test_compatibility(ORDER, schema)


class _RefusingRegistry:
    """The mock, with a registry check that refuses everything (a stub for one path)."""

    def __init__(self) -> None:
        self.inner = _mock()
        self.asked: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def test_compatibility(self, subject_name: str, schema: Any) -> bool:
        self.asked.append(subject_name)
        return False


def test_registry_refusal_stops_the_run_with_a_hint_for_shared_topics() -> None:
    client = _RefusingRegistry()
    plan = registration_plan(SCHEMAS, SubjectStrategy.TOPIC, "clicks")
    results = register(client, plan, strategy=SubjectStrategy.TOPIC)  # type: ignore[arg-type]
    # The first schema goes into an empty subject (nothing to check); the second is refused.
    assert [r.status for r in results] == [Status.REGISTERED, Status.REFUSED]
    assert client.asked == ["clicks-value"]
    assert "set the subject's compatibility to NONE" in results[1].message
    assert client.inner.get_versions("clicks-value") == [1]


def test_cli_registers_and_refuses(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        main, ["avro", "register", "--url", "mock://", "--subject-strategy", "topic-record"]
    )
    assert ok.exit_code == 2 and "needs --topic" in ok.output

    ok = runner.invoke(main, ["avro", "register", "--url", "mock://", "--type", "order"])
    assert ok.exit_code == 0, ok.output
    lines = [line for line in ok.output.splitlines() if line.startswith("registered")]
    assert lines == [
        f"registered: {ORDER} (edition v1) -> subject '{ORDER}' (id 1, version 1)",
        f"registered: {ORDER} (edition v2) -> subject '{ORDER}' (id 2, version 2)",
    ]

    avro_dir = tmp_path / "avro"
    shutil.copytree(DEFAULT_AVRO_DIR, avro_dir)
    path = avro_dir / "v2" / "OrderEvent.avsc"
    path.write_text(json.dumps(_with_required_field(json.loads(path.read_text()), "loyaltyTier")))
    refused = runner.invoke(
        main,
        ["avro", "register", "--url", "mock://", "--avro-dir", str(avro_dir), "--type", "order"],
    )
    assert refused.exit_code == 1
    assert f"refused: {ORDER} (edition v2) -> subject '{ORDER}'" in refused.output
    assert "loyaltyTier" in refused.output
    assert "registered:" not in refused.output


def test_cli_reads_the_registry_settings_from_the_environment() -> None:
    env = {
        "PIPELINE_SCHEMA_REGISTRY_URL": "mock://",
        "PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH": "user:secret-password",
        "PIPELINE_SUBJECT_NAME_STRATEGY": "topic",
    }
    args = ["avro", "register", "--topic", "clicks", "--type", "pageView", "--dry-run"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert (
        "would register: connect.signals.PageViewEvent (edition v1) -> subject 'clicks-value'"
        in (result.output)
    )
    assert "secret-password" not in result.output
