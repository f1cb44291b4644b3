"""avro/ is what the generator writes, and earlier-edition events read as current ones.

- The checked-in schemas equal the generator's output; drift (a changed, missing or
  extra file) is caught by the test and by ``avro generate --check``.
- Records written with each v1 schema are read with the v2 reader schema (the codec's
  schema resolution) and map to the same signal as the JSON form of the same event.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner
from devtools.clickstream import clickstream

from pipeline.cli.main import main
from pipeline.codec.avro import Decoded, EventDecoder, SchemaStore, encode_single_object
from pipeline.codec.schemas import stale_files
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.signals import catalog
from pipeline.signals.mapping import MappedSignal, MappingOptions, map_event
from pipeline.signals.validation import ValidEvent, validate_event
from tests.spec_examples import EARLIER, SpecExample, examples
from tests.unit.test_spec_examples import build_event

V1_TYPES: Final = sorted(t for t, s in catalog.SIGNALS.items() if s.in_v1)
OPTIONS: Final = MappingOptions(default_app_key="test-default-app-key")
DECODER: Final = EventDecoder(SchemaStore.from_directory(DEFAULT_AVRO_DIR))


@cache  # one object per schema: the encoder caches its parse per object
def _v1_schema(signal_type: str) -> dict[str, Any]:
    path = DEFAULT_AVRO_DIR / "v1" / f"{catalog.SIGNALS[signal_type].record_name}.avsc"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def test_checked_in_schemas_are_the_generators() -> None:
    stale = stale_files(DEFAULT_AVRO_DIR)
    assert stale == [], (
        f"avro/ drifted from the catalog ({stale}): run connect-pipeline avro generate"
    )


def test_drift_is_detected(tmp_path: Path) -> None:
    avro_dir = tmp_path / "avro"
    shutil.copytree(DEFAULT_AVRO_DIR, avro_dir)
    order = avro_dir / "v2" / "OrderEvent.avsc"
    order.write_text(order.read_text().replace('"orderId"', '"orderNumber"'))
    (avro_dir / "v1" / "ErrorEvent.avsc").unlink()
    (avro_dir / "v2" / "StrayEvent.avsc").write_text("{}\n")
    expected = ["v1/ErrorEvent.avsc", "v2/OrderEvent.avsc", "v2/StrayEvent.avsc"]
    assert stale_files(avro_dir) == expected

    runner = CliRunner()
    check = runner.invoke(main, ["avro", "generate", "--check", "--out", str(avro_dir)])
    assert check.exit_code == 1
    assert [line.rsplit("/", 2)[-2:] for line in check.stdout.splitlines()] == [
        p.split("/") for p in expected
    ]
    assert runner.invoke(main, ["avro", "generate", "--out", str(avro_dir)]).exit_code == 0
    assert stale_files(avro_dir) == []


def _avro_record(schema: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of an event as an Avro producer holds it (absent fields: None)."""
    record = {f["name"]: event.get(f["name"]) for f in schema["fields"]}
    record["eventTime"] = datetime.fromisoformat(event["eventTime"])
    identity = event.get("identifiableAttributes") or {}
    record["identifiableAttributes"] = {k: identity.get(k) for k in catalog.IDENTIFIABLE_ATTRIBUTES}
    return record


def _decode_and_map(value: bytes) -> MappedSignal:
    decoded = DECODER.decode(value)
    assert isinstance(decoded, Decoded), decoded
    signal_type = catalog.BY_RECORD_NAME[decoded.record_name.rpartition(".")[2]]
    valid = validate_event(signal_type, decoded.record)
    assert isinstance(valid, ValidEvent), valid
    mapped = map_event(valid, OPTIONS)
    assert isinstance(mapped, MappedSignal), mapped
    return mapped


EARLIER_EXAMPLES: Final = [e for e in examples(EARLIER) if e.form == "mutation"]


def test_every_earlier_type_has_an_example() -> None:
    assert sorted(e.signal_type for e in EARLIER_EXAMPLES) == V1_TYPES


@pytest.mark.parametrize("example", EARLIER_EXAMPLES, ids=lambda e: e.id)
def test_v1_written_example_reads_with_v2_and_maps_like_its_json_form(
    example: SpecExample,
) -> None:
    event = build_event(example)
    schema = _v1_schema(example.signal_type)
    value = encode_single_object(schema, _avro_record(schema, event))
    via_avro = _decode_and_map(value)

    via_json = validate_event(example.signal_type, event)
    assert isinstance(via_json, ValidEvent), via_json
    expected = map_event(via_json, OPTIONS)
    assert isinstance(expected, MappedSignal)
    assert via_avro.signal == expected.signal
    assert via_avro.idempotency_key == expected.idempotency_key


def test_generated_v1_events_of_every_type_read_with_v2() -> None:
    seen: dict[str, int] = {}
    for event in clickstream(600, seed=11, invalid_ratio=0, v1_ratio=1.0):
        if event.edition != 1:
            continue
        mapped = _decode_and_map(encode_single_object(_v1_schema(event.signal_type), event.record))
        assert mapped.signal_type == event.signal_type
        seen[event.signal_type] = seen.get(event.signal_type, 0) + 1
        if event.signal_type == "order":
            written = sum(i["quantity"] for i in event.record["orderedItems"])
            items = mapped.signal["signalContent"]["orderedItems"]
            assert sum(i.get("itemQuantity", 1) for i in items) == written
    assert sorted(seen) == V1_TYPES
