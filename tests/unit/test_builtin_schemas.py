"""Without avro/ (an installed wheel) the schemas come from the catalog, equal to avro/."""

from __future__ import annotations

from pathlib import Path

import pytest
from devtools.clickstream import clickstream
from devtools.producer import EventEncoder, load_schema

from pipeline import config
from pipeline.codec import schemas as avro_schemas
from pipeline.codec.avro import Decoded, EventDecoder, SchemaStore
from pipeline.codec.schemas import read_schemas, schema_texts

CHECKED_IN = Path(__file__).resolve().parents[2] / "avro"


@pytest.fixture
def absent_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # an installed wheel: the default path is site-packages/avro, the Avro library's
    missing = tmp_path / "avro"
    (missing / "schemas").mkdir(parents=True)
    (missing / "HandshakeRequest.avsc").write_text("{}")
    monkeypatch.setattr(config, "DEFAULT_AVRO_DIR", missing)
    return missing


def test_built_in_schemas_equal_the_checked_in_ones(absent_default: Path) -> None:
    checked_in = schema_texts(CHECKED_IN)
    assert schema_texts(absent_default) == checked_in
    assert read_schemas(absent_default) == read_schemas(CHECKED_IN)
    assert len(checked_in) == len(avro_schemas.generated_files())


def test_events_encode_and_decode_with_the_built_in_schemas(absent_default: Path) -> None:
    encoder = EventEncoder(absent_default)
    decoder = EventDecoder(SchemaStore.from_directory(absent_default))
    events = list(clickstream(40, seed=2, invalid_ratio=0, v1_ratio=0.5))
    assert {e.edition for e in events} == {1, 2}
    for event in events:
        decoded = decoder.decode(encoder.encode(event))
        assert isinstance(decoded, Decoded), decoded
    assert load_schema(absent_default, 2, "order")["name"] == "OrderEvent"


def test_a_configured_directory_without_schemas_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no Avro schemas"):
        SchemaStore.from_directory(tmp_path)
