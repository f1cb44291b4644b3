"""Writer schema ids carried in the ``__value_schema_id`` record header (issue 15).

confluent-kafka (2.x, ``header_schema_id_serializer``) can put the writer schema id in a
header instead of the 5-byte prefix: magic 0x00 and a 4-byte big-endian id, or 0x01 and
the schema's 16-byte GUID. Its ``dual_schema_id_deserializer`` reads the header first
and, when there is one, the whole value as the Avro body. These tests hold the decoder
to that: the header's parsing (every malformed shape), the precedence, and a round trip
with confluent-kafka's own serializer and deserializer (the in-process ``mock://``
registry: no network; the HTTP registry and the broker are in tests/faults).
"""

from __future__ import annotations

import io
import json
import random
import uuid
from typing import Any, Final

import pytest
from confluent_kafka.schema_registry import (
    SchemaRegistryClient,
    dual_schema_id_deserializer,
    header_schema_id_serializer,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.common.serde import SchemaId
from confluent_kafka.serialization import MessageField, SerializationContext

from pipeline.codec.avro import Decoded, DecodeFailure, EventDecoder, SchemaStore, encode_confluent
from pipeline.codec.framing import (
    VALUE_SCHEMA_ID_HEADER,
    encode_header_id,
    schema_id_header,
    schema_id_header_problem,
)
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.signals.mapping import MappedSignal, MappingOptions
from pipeline.signals.outcomes import Reason, Rejection
from pipeline.signals.processor import EventProcessor
from tests.fuzz.hostile import avro_schema, sample_records

STORE: Final = SchemaStore.from_directory(DEFAULT_AVRO_DIR)
H: Final = VALUE_SCHEMA_ID_HEADER
GUID: Final = uuid.UUID("de1b7d12-4548-4419-9951-9c085ae358f2")


def _record() -> dict[str, Any]:
    return sample_records()[(2, "addToCart")]


def _body() -> bytes:
    """The bare Avro body (what a header-id producer writes as the value)."""
    return encode_confluent(1, avro_schema(2, "addToCart"), _record())[5:]


class _Serialized:
    """One record written by confluent-kafka's AvroSerializer in header mode."""

    def __init__(self) -> None:
        self.client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
        serializer = AvroSerializer(
            self.client,
            json.dumps(avro_schema(2, "addToCart")),
            conf={"schema.id.serializer": header_schema_id_serializer},
        )
        self.headers: list[tuple[str, bytes]] = [("traceparent", b"00-aa-bb-01")]
        context = SerializationContext("clicks", MessageField.VALUE, self.headers)
        self.value: bytes = serializer(_record(), context)


# --- finding the header: as dual_schema_id_deserializer does ---------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        ([("traceparent", b"00-aa")], None),
        ([("traceparent", b"x"), (H, b"\x00\x00\x00\x00\x07")], b"\x00\x00\x00\x00\x07"),
        ([(H, b"first"), (H, b"second")], b"first"),  # the first one, as Confluent's loop
        ([(H, None)], None),  # a null value: the value's framing decides, as there
        ([("__key_schema_id", b"\x00\x00\x00\x00\x07")], None),  # the key's: not the value's
        ({H: b"\x00\x00\x00\x00\x09"}, b"\x00\x00\x00\x00\x09"),
    ],
)
def test_the_header_is_found_as_confluent_finds_it(headers: Any, expected: bytes | None) -> None:
    assert schema_id_header(headers) == expected


# --- the header's value: every malformed shape, named ----------------------------------


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "the value is empty"),
        (b"\x02\x00\x00\x00\x07", "unknown magic byte 0x02"),
        (b"\xff" + bytes(16), "unknown magic byte 0xff"),
        (b"\xc3\x01" + bytes(8), "unknown magic byte 0xc3"),  # single-object is no header form
        (b"\x00", "1 bytes with magic 0x00, not 5"),
        (b"\x00\x00\x00\x07", "4 bytes with magic 0x00, not 5"),
        (b"\x00\x00\x00\x00\x07\x00", "6 bytes with magic 0x00, not 5"),
        (b"\x01" + bytes(15), "16 bytes with magic 0x01, not 17"),
        (b"\x01" + bytes(4), "5 bytes with magic 0x01, not 17"),
        (b"\x01" + bytes(17), "18 bytes with magic 0x01, not 17"),
        ("\x00\x00\x00\x00\x07", "the value is str, not bytes"),
    ],
)
def test_a_malformed_header_names_what_breaks_the_rule(raw: Any, says: str) -> None:
    problem = schema_id_header_problem(raw)
    assert problem is not None and problem.startswith(says), problem
    assert "expected 0x00 then a 4-byte big-endian schema id, or 0x01 then a 16-byte GUID" in (
        problem
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x02\x00\x00\x00\x07",
        b"\x00\x00\x00\x07",
        b"\x01" + bytes(15),
        b"\x00\x00\x00\x00\x07",
        b"\x01" + GUID.bytes,
        b"\x00\x00\x00\x00\x07\x00",
    ],
)
def test_the_rule_is_confluents_own_where_confluent_has_one(raw: bytes) -> None:
    """Confluent's SchemaId.from_bytes accepts exactly what is accepted here, except
    bytes after an Avro id (Protobuf message indexes, which it reads only for
    Protobuf): refused here, as no Avro writer sends them."""
    theirs = SchemaId("AVRO")
    try:
        rest = theirs.from_bytes(io.BytesIO(raw)).read()
        confluent_accepts = True
    except Exception:
        confluent_accepts = False
    ours = schema_id_header_problem(raw) is None
    if confluent_accepts and rest:
        assert not ours  # the one difference: trailing bytes
    else:
        assert ours == confluent_accepts
    if ours:
        assert (theirs.id, theirs.guid) in {(7, None), (None, GUID)}


# --- decoding ---------------------------------------------------------------------------


def test_confluents_serializer_in_header_mode_decodes_with_its_writer_schema() -> None:
    written = _Serialized()
    header = dict(written.headers)[H]
    assert header[0] == 1 and len(header) == 17  # the serializer writes the GUID form
    decoded = EventDecoder(STORE, written.client).decode(written.value, written.headers)
    assert isinstance(decoded, Decoded), decoded
    assert decoded.record == AvroDeserializer(written.client)(
        written.value, SerializationContext("clicks", MessageField.VALUE, written.headers)
    )
    assert decoded.writer_key == f"guid:{uuid.UUID(bytes=header[1:])}"


def test_an_id_header_decodes_the_bare_body_and_shares_the_framed_ids_plan() -> None:
    written = _Serialized()  # registers the schema: id 1 in a fresh mock registry
    decoder = EventDecoder(STORE, written.client)
    by_header = decoder.decode(_body(), [(H, encode_header_id(schema_id=1))])
    framed = decoder.decode(encode_confluent(1, avro_schema(2, "addToCart"), _record()))
    assert isinstance(by_header, Decoded) and isinstance(framed, Decoded)
    assert by_header.record == framed.record and by_header.writer_key == "id:1"
    assert decoder.cache_sizes == (1, 0)  # one plan for both: the key is the same 5 bytes


def test_the_header_decides_over_the_values_framing_as_confluent_does() -> None:
    written = _Serialized()
    decoder = EventDecoder(STORE, written.client)
    framed = encode_confluent(1, avro_schema(2, "addToCart"), _record())
    alone = decoder.decode(framed)
    assert isinstance(alone, Decoded)
    # With the header, the whole value is the body: the framing bytes are read as Avro,
    # as Confluent's dual deserializer reads them (it returns the full payload).
    with_header = decoder.decode(framed, [(H, encode_header_id(schema_id=1))])
    assert not (isinstance(with_header, Decoded) and with_header.record == alone.record)
    their_id = SchemaId("AVRO")
    context = SerializationContext("clicks", MessageField.VALUE, [(H, b"\x00\x00\x00\x00\x01")])
    assert dual_schema_id_deserializer(framed, context, their_id).read() == framed
    # A null header value: the framing decides again.
    assert isinstance(decoder.decode(framed, [(H, None)]), Decoded)


def test_headers_without_a_schema_id_leave_the_framing_to_decide() -> None:
    written = _Serialized()
    framed = encode_confluent(1, avro_schema(2, "addToCart"), _record())
    decoded = EventDecoder(STORE, written.client).decode(framed, [("traceparent", b"00-aa")])
    assert isinstance(decoded, Decoded) and decoded.record["eventId"] == _record()["eventId"]


@pytest.mark.parametrize(
    ("raw", "reason", "says"),
    [
        (b"\x07\x00\x00\x00\x01", "undecodable", "unknown magic byte 0x07"),
        (b"\x00\x00\x01", "undecodable", "3 bytes with magic 0x00, not 5"),
        (b"\x01" + bytes(3), "undecodable", "4 bytes with magic 0x01, not 17"),
        (b"", "undecodable", "the value is empty"),
        (encode_header_id(schema_id=424242), "unknown_schema", "schema id 424242 not found"),
        (
            encode_header_id(guid=GUID.bytes),
            "unknown_schema",
            f"schema GUID {GUID} not found",
        ),
    ],
)
def test_a_bad_header_is_a_decode_failure_naming_the_header(
    raw: bytes, reason: str, says: str
) -> None:
    written = _Serialized()
    decoded = EventDecoder(STORE, written.client).decode(_body(), [(H, raw)])
    assert isinstance(decoded, DecodeFailure)
    assert decoded.reason == reason
    assert decoded.message.startswith(f"header {H}: {says}"), decoded.message


def test_a_header_id_without_a_registry_is_unknown_schema() -> None:
    decoded = EventDecoder(STORE).decode(_body(), [(H, encode_header_id(guid=GUID.bytes))])
    assert isinstance(decoded, DecodeFailure) and decoded.reason == "unknown_schema"
    assert decoded.message == (
        f"header {H}: schema GUID {GUID}: a Schema Registry id but no Schema Registry configured"
    )


def test_an_empty_value_with_a_good_header_is_undecodable() -> None:
    written = _Serialized()
    header = dict(written.headers)[H]
    decoded = EventDecoder(STORE, written.client).decode(b"", [(H, header)])
    assert isinstance(decoded, DecodeFailure)
    assert (decoded.reason, decoded.message) == ("undecodable", "empty value")


# --- the processor passes headers through -------------------------------------------


def test_the_processor_maps_a_header_id_record_and_rejects_a_bad_header() -> None:
    written = _Serialized()
    processor = EventProcessor(
        EventDecoder(STORE, written.client), MappingOptions(default_app_key="app")
    )
    outcome = processor.process(written.value, written.headers)
    assert isinstance(outcome, MappedSignal) and outcome.signal_type == "addToCart"
    assert isinstance(processor.process(written.value), Rejection)  # the value alone: no id
    bad = processor.process(written.value, [(H, b"\x09")])
    assert isinstance(bad, Rejection) and bad.reason is Reason.UNDECODABLE
    assert bad.message.startswith(f"header {H}: unknown magic byte 0x09")


def test_random_header_values_never_raise_and_keep_the_caches_bounded() -> None:
    """Any bytes in the header: a DecodeFailure (or a record), never an exception; the
    unknown ids and GUIDs among them are remembered within the cache bounds."""
    rng = random.Random(15)
    written = _Serialized()
    decoder = EventDecoder(STORE, written.client, failure_cache_size=64, plan_cache_size=8)
    outcomes: set[str] = set()
    for _ in range(3000):
        magic = rng.choice([0, 1, 2, 0xC3, 0xFF])
        raw = bytes([magic]) + rng.randbytes(rng.choice([0, 3, 4, 5, 15, 16, 17]))
        decoded = decoder.decode(written.value, [("traceparent", b"x"), (H, raw)])
        if isinstance(decoded, DecodeFailure):
            assert decoded.message.startswith(f"header {H}: "), decoded.message
            outcomes.add(decoded.reason)
        else:
            assert isinstance(decoded, Decoded)
            outcomes.add("decoded")
    assert {"undecodable", "unknown_schema"} <= outcomes
    plans, failures = decoder.cache_sizes
    assert plans <= 8 and failures <= 2 * 64
