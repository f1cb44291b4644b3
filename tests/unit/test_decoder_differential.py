"""The accelerated reader (cavro) against the reference (fastavro): identical results.

Two decoders over the same values, ``accelerate=True`` and ``accelerate=False``: the
same ``Decoded`` (same dict, same key order, same value types, NaN for NaN) or the same
``DecodeFailure``. Over every schema and edition in both framings, the fuzz corpus,
random valid records of any shape (hypothesis), mutated encodings and random bytes.
The earlier edition is resolved by both libraries (cavro's keys put in fastavro's
order): ``quantity`` -> ``itemQuantity`` and the defaults of fields the earlier
edition lacks come out the same.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from typing import Any, Final

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.codec import accelerated
from pipeline.codec.avro import (
    Decoded,
    DecodeFailure,
    EventDecoder,
    SchemaStore,
    encode_confluent,
)
from pipeline.config import DEFAULT_AVRO_DIR
from tests.fuzz.hostile import (
    CORPUS,
    avro_schema,
    editions,
    encode,
    registry,
    sample_records,
    valid_encodings,
)
from tests.fuzz.test_hostile_input import from_avro, mutated

STORE: Final = SchemaStore.from_directory(DEFAULT_AVRO_DIR)
EXAMPLES: Final = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("FUZZ_RANDOM") is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_RECORDS: Final = {key: from_avro(avro_schema(*key), {}) for key in editions()}


FAST: Final = EventDecoder(STORE, registry()[0])  # accelerate=True is the default
REFERENCE: Final = EventDecoder(STORE, registry()[0], accelerate=False)


def same(value: bytes | None) -> Decoded | DecodeFailure:
    """Decode with both; assert identical results (repr: key order, types, NaN)."""
    fast, reference = FAST.decode(value), REFERENCE.decode(value)
    assert type(fast) is type(reference)
    assert repr(fast) == repr(reference), (repr(fast)[:500], repr(reference)[:500])
    return reference


def test_cavro_is_installed_and_used_for_the_current_edition() -> None:
    """Otherwise every comparison below would compare fastavro with itself."""
    assert accelerated.available()
    for edition, signal_type in editions():
        schema = avro_schema(edition, signal_type)
        assert accelerated.supported(schema), (edition, signal_type)
        decoder = EventDecoder(STORE)
        value = encode(edition, signal_type, sample_records()[(edition, signal_type)], False)
        assert isinstance(decoder.decode(value), Decoded)
        plan = next(iter(decoder._plans.values()))
        assert plan.fast is not None, (edition, signal_type)  # resolved ones (v1) too
        assert (plan.reader is None) == (edition == 2)


def test_the_setting_turns_it_off() -> None:
    value = valid_encodings()[-1]
    assert isinstance(REFERENCE.decode(value), Decoded)
    assert all(plan.fast is None for plan in REFERENCE._plans.values())


@pytest.mark.parametrize("key", editions(), ids=lambda k: f"v{k[0]}-{k[1]}")
@pytest.mark.parametrize("confluent", [False, True], ids=["single-object", "confluent"])
def test_every_schema_and_edition(key: tuple[int, str], confluent: bool) -> None:
    value = encode(*key, sample_records()[key], confluent)
    decoded = same(value)
    assert isinstance(decoded, Decoded)
    start = 5 if confluent else 10
    fast = FAST._plans[value[:start]].fast
    assert fast is not None and fast(value, start) is not None  # cavro read it, no fallback
    for cut in (1, 5, len(value) // 2, len(value) - 1):  # truncated: the same failure
        assert isinstance(same(value[:-cut]), DecodeFailure)
    assert same(value + b"\x00\x01") == DecodeFailure(
        "undecodable", f"2 trailing bytes after the record ({decoded.writer_key})"
    )


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.bin")), ids=lambda p: p.name)
def test_fuzz_corpus(path: Any) -> None:
    same(path.read_bytes())


@FUZZ
@given(data=st.data(), key=st.sampled_from(editions()), confluent=st.booleans())
def test_random_valid_records(data: st.DataObject, key: tuple[int, str], confluent: bool) -> None:
    same(encode(*key, data.draw(_RECORDS[key]), confluent))


@FUZZ
@given(mutated())
def test_mutated_encodings(value: bytes) -> None:
    same(value)


@FUZZ
@given(prefix=st.sampled_from([v[:10] for v in valid_encodings()]), body=st.binary(max_size=300))
def test_random_bytes_behind_known_headers(prefix: bytes, body: bytes) -> None:
    same(prefix + body)


def test_fastavro_only_never_imports_cavro() -> None:
    """PIPELINE_AVRO_DECODER=fastavro pays nothing for cavro (numpy: about 20 MB)."""
    script = (
        "import sys\n"
        "from pipeline.codec.avro import EventDecoder, SchemaStore\n"
        "from pipeline.config import DEFAULT_AVRO_DIR\n"
        "from tests.fuzz.hostile import valid_encodings\n"
        "decoder = EventDecoder(SchemaStore.from_directory(DEFAULT_AVRO_DIR), accelerate=False)\n"
        "assert type(decoder.decode(valid_encodings()[-2])).__name__ == 'Decoded'\n"
        "print('cavro' in sys.modules)\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "False", ran.stderr


#: How a writer schema a registry holds may differ from ours (``_variant`` builds each).
THIRD_PARTY_CHANGES = [
    "shuffled",
    "reversed-identity",
    "without-identity",
    "without-optionals",
    "extra-fields",
    "long-as-double",
    "required-optional",
    "narrower-long",
]


def _variant(change: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A third party's writer schema for AddToCartEvent, and a record it writes."""
    schema = copy.deepcopy(avro_schema(2, "addToCart"))
    record = dict(sample_records()[(2, "addToCart")])
    fields = schema["fields"]
    if change == "shuffled":
        random.Random(4).shuffle(fields)
    elif change == "reversed-identity":
        identity = next(f for f in fields if f["name"] == "identifiableAttributes")
        identity["type"]["fields"].reverse()
    elif change == "without-identity":  # the reader's default (a record) fills it
        schema["fields"] = [f for f in fields if f["name"] != "identifiableAttributes"]
        del record["identifiableAttributes"]
    elif change == "without-optionals":
        schema["fields"] = [f for f in fields if f.get("default", 0) is not None]
    elif change == "extra-fields":
        fields.insert(3, {"name": "legacy", "type": ["null", "string"], "default": None})
        fields.append({"name": "tags", "type": {"type": "array", "items": "string"}})
        record |= {"legacy": "x", "tags": ["a", "b"]}
    elif change == "long-as-double":  # a double written as long: promotion
        price = next(f for f in fields if f["name"] == "unitPrice")
        price["type"] = "long"
        record["unitPrice"] = 12
    elif change == "required-optional":  # a nullable field written as required
        name = next(f for f in fields if f["name"] == "productCategory")
        name["type"] = "string"
        del name["default"]
        record["productCategory"] = record.get("productCategory") or "Lamps"
    elif change == "narrower-long":  # long written as int: promotion
        quantity = next(f for f in fields if f["name"] == "itemQuantity")
        quantity["type"] = "int"
    return schema, record


def _written_by_third_party(change: str) -> tuple[Any, bytes]:
    """A registry holding ``change``'s writer schema, and a record it wrote (Confluent framing)."""
    schema, record = _variant(change)
    client = SchemaRegistryClient.new_client({"url": "mock://"})
    schema_id = client.register_schema("cart", Schema(json.dumps(schema), "AVRO"))
    return client, encode_confluent(schema_id, schema, record)


@pytest.mark.parametrize("change", THIRD_PARTY_CHANGES)
def test_third_party_writer_schemas_resolve_alike(change: str) -> None:
    """Writer schemas a registry may hold: reordered, missing, extra, promoted fields."""
    client, value = _written_by_third_party(change)
    accelerated_decoder = EventDecoder(STORE, client)
    fast = accelerated_decoder.decode(value)
    reference = EventDecoder(STORE, client, accelerate=False).decode(value)
    assert repr(fast) == repr(reference), (repr(fast)[:400], repr(reference)[:400])
    assert isinstance(reference, Decoded)
    reader = accelerated_decoder._plans[value[:5]].fast
    if change == "narrower-long":
        assert reader is None  # int is not among the tested types: fastavro reads it
    else:
        assert reader is not None and reader(value, 5) is not None


@pytest.mark.parametrize("session", [None, "s-1"])
def test_a_nullable_writer_field_the_reader_requires(session: str | None) -> None:
    """Resolution per value: a null fails (fastavro's message), a string reads alike."""
    schema = copy.deepcopy(avro_schema(2, "addToCart"))
    field = next(f for f in schema["fields"] if f["name"] == "sessionId")
    field |= {"type": ["null", "string"], "default": None}
    record = {**sample_records()[(2, "addToCart")], "sessionId": session}
    client = SchemaRegistryClient.new_client({"url": "mock://"})
    schema_id = client.register_schema("cart", Schema(json.dumps(schema), "AVRO"))
    value = encode_confluent(schema_id, schema, record)
    fast = EventDecoder(STORE, client).decode(value)
    reference = EventDecoder(STORE, client, accelerate=False).decode(value)
    assert repr(fast) == repr(reference)
    assert isinstance(reference, Decoded) == (session is not None), reference
