"""pipeline/codec/avro.py: both wire formats, and every way a value can fail to decode.

Confluent framing goes through confluent-kafka's in-process mock registry
(``mock://``). Failures are values (``DecodeFailure``) with a reason class and a
message that names the problem and never carries the raw bytes.
"""

from __future__ import annotations

import json
import struct
from functools import cache
from typing import Any, Final

import avro.schema
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from devtools.clickstream import clickstream
from fastavro.schema import to_parsing_canonical_form

from pipeline.codec.avro import (
    Decoded,
    DecodeFailure,
    EventDecoder,
    SchemaRegistryUnavailable,
    SchemaStore,
    crc64_fingerprint,
    encode_confluent,
    encode_single_object,
)
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.signals import catalog

STORE: Final = SchemaStore.from_directory(DEFAULT_AVRO_DIR)
ORDER: Final = "connect.signals.OrderEvent"


@cache
def schema(edition: int, signal_type: str) -> dict[str, Any]:
    path = DEFAULT_AVRO_DIR / f"v{edition}" / f"{catalog.SIGNALS[signal_type].record_name}.avsc"
    return dict(json.loads(path.read_text(encoding="utf-8")))


@cache
def sample(edition: int, signal_type: str) -> dict[str, Any]:
    for event in clickstream(400, seed=3, invalid_ratio=0, v1_ratio=1.0 if edition == 1 else 0):
        if event.signal_type == signal_type and event.edition == edition:
            return event.record
    raise AssertionError(f"no {signal_type} v{edition} event")


def registry_with(*schemas: tuple[str, dict[str, Any]]) -> tuple[Any, list[int]]:
    client = SchemaRegistryClient.new_client({"url": "mock://"})
    ids = [client.register_schema(subject, Schema(json.dumps(s), "AVRO")) for subject, s in schemas]
    return client, ids


def failure(value: bytes | None, registry: Any = None) -> DecodeFailure:
    result = EventDecoder(STORE, registry).decode(value)
    assert isinstance(result, DecodeFailure), result
    return result


# --- the two framings ------------------------------------------------------------------


def test_confluent_framing_through_the_mock_registry() -> None:
    client, (v1_id, v2_id) = registry_with((ORDER, schema(1, "order")), (ORDER, schema(2, "order")))
    decoder = EventDecoder(STORE, client)
    current = decoder.decode(encode_confluent(v2_id, schema(2, "order"), sample(2, "order")))
    assert isinstance(current, Decoded)
    assert (current.record_name, current.writer_key) == (ORDER, f"id:{v2_id}")
    assert current.record["orderId"] == sample(2, "order")["orderId"]
    assert current.record["eventTime"] == sample(2, "order")["eventTime"]

    earlier = decoder.decode(encode_confluent(v1_id, schema(1, "order"), sample(1, "order")))
    assert isinstance(earlier, Decoded) and earlier.writer_key == f"id:{v1_id}"
    written = [i["quantity"] for i in sample(1, "order")["orderedItems"]]
    assert [i["itemQuantity"] for i in earlier.record["orderedItems"]] == written
    assert all("quantity" not in i for i in earlier.record["orderedItems"])


def test_single_object_encoding() -> None:
    value = encode_single_object(schema(2, "pageView"), sample(2, "pageView"))
    fp = crc64_fingerprint(schema(2, "pageView"))
    assert value[:2] == b"\xc3\x01" and value[2:10] == fp
    decoded = EventDecoder(STORE).decode(value)
    assert isinstance(decoded, Decoded)
    assert decoded.writer_key == f"fp:{fp[::-1].hex()}"
    assert decoded.record["sessionId"] == sample(2, "pageView")["sessionId"]


_EMPTY64: Final = 0xC15D213AA4D7A795


def spec_fingerprint64(data: bytes) -> int:
    """The Avro specification's reference CRC-64-AVRO (Rabin) fingerprint, as a number."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprint_bytes_are_little_endian_as_the_avro_spec_says() -> None:
    assert spec_fingerprint64(b'"int"') == 0x7275D51A3F395C8F  # the spec's own test vector
    assert crc64_fingerprint({"type": "int"}) == struct.pack("<Q", 0x7275D51A3F395C8F)
    plain = {
        "type": "record",
        "name": "R",
        "namespace": "x",
        "fields": [{"name": "a", "type": "string"}],
    }
    apache = avro.schema.parse(json.dumps(plain)).fingerprint("CRC-64-AVRO")
    assert crc64_fingerprint(plain) == bytes(apache)


def test_decodes_what_a_spec_conforming_single_object_producer_writes() -> None:
    """The header laid out as the Avro specification says: C3 01, fingerprint little-endian."""
    order = schema(2, "order")
    canonical = to_parsing_canonical_form(order).encode()
    header = b"\xc3\x01" + struct.pack("<Q", spec_fingerprint64(canonical))
    body = encode_single_object(order, sample(2, "order"))[10:]
    decoded = EventDecoder(STORE).decode(header + body)
    assert isinstance(decoded, Decoded), decoded
    assert decoded.record["orderId"] == sample(2, "order")["orderId"]


# --- failures -----------------------------------------------------------------------


def test_unknown_schema_id() -> None:
    client, _ = registry_with((ORDER, schema(2, "order")))
    body = encode_confluent(999, schema(2, "order"), sample(2, "order"))
    result = failure(body, client)
    assert (result.reason, result.message) == ("unknown_schema", "schema id 999 not found")


def test_confluent_framing_without_a_registry() -> None:
    result = failure(encode_confluent(1, schema(2, "order"), sample(2, "order")))
    assert result.reason == "unknown_schema"
    assert "no Schema Registry configured" in result.message


def test_registered_schema_of_a_record_we_do_not_know() -> None:
    stranger = {"type": "record", "name": "Stranger", "namespace": "x", "fields": []}
    client, (stranger_id,) = registry_with(("x.Stranger", stranger))
    result = failure(bytes([0]) + stranger_id.to_bytes(4, "big"), client)
    assert result.reason == "unknown_schema"
    assert result.message == "no local reader schema for record 'x.Stranger'"


def test_unknown_fingerprint() -> None:
    value = b"\xc3\x01" + bytes(range(8)) + b"\x00"
    result = failure(value)
    assert result.reason == "unknown_schema"
    assert result.message == f"no schema with fingerprint fp:{bytes(range(8))[::-1].hex()}"


@pytest.mark.parametrize("cut", [1, 7, 20, -1])
def test_truncated_body(cut: int) -> None:
    value = encode_single_object(schema(2, "order"), sample(2, "order"))
    result = failure(value[: 10 + cut] if cut > 0 else value[:cut])
    assert result.reason == "undecodable"
    assert result.message.startswith(("truncated Avro body", "malformed Avro body"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x00\x00\x01", "truncated Confluent header"),
        (b"\xc3\x01\x01\x02", "truncated single-object header"),
        (b"", "empty value"),
        (None, "empty value"),
    ],
)
def test_truncated_or_empty_framing(value: bytes | None, message: str) -> None:
    assert failure(value) == DecodeFailure("undecodable", message)


@pytest.mark.parametrize("first", [b"\x01", b"\xc3\x02", b"{", b"\xff"])
def test_wrong_magic(first: bytes) -> None:
    value = first + encode_single_object(schema(2, "order"), sample(2, "order"))[2:]
    result = failure(value)
    assert result.reason == "undecodable"
    assert result.message.startswith(f"unknown framing: first byte 0x{first[0]:02x}")


def test_trailing_bytes() -> None:
    value = encode_single_object(schema(2, "error"), sample(2, "error")) + b"\x00\x00"
    assert failure(value).message.startswith("2 trailing bytes after the record")


def test_messages_never_carry_the_payload() -> None:
    secret = "visitor-secret@example.com"
    record = {**sample(2, "order")}
    record["identifiableAttributes"] = {**record["identifiableAttributes"], "email": secret}
    value = encode_single_object(schema(2, "order"), record)
    for broken in (value[:-3], b"\x07" + value[1:], value + b"x"):
        assert secret not in failure(broken).message


class _FlakyRegistry:
    """A registry that fails once with an outage, then answers (stub for one path)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def get_schema(self, schema_id: int) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("registry unreachable")
        return self.inner.get_schema(schema_id)


def test_registry_outage_raises_and_is_not_cached() -> None:
    client, (order_id,) = registry_with((ORDER, schema(2, "order")))
    flaky = _FlakyRegistry(client)
    decoder = EventDecoder(STORE, flaky, unavailable_hold_s=0)  # retry at once
    value = encode_confluent(order_id, schema(2, "order"), sample(2, "order"))
    # An outage is not the event's fault: the caller retries, nothing is dead-lettered.
    with pytest.raises(SchemaRegistryUnavailable, match=f"schema id {order_id}: ConnectionError"):
        decoder.decode(value)
    assert isinstance(decoder.decode(value), Decoded)
    assert isinstance(decoder.decode(value), Decoded)
    assert flaky.calls == 2  # the plan is cached after the first success


def test_values_over_the_size_limit_are_refused_undecoded() -> None:
    value = encode_single_object(schema(2, "order"), sample(2, "order"))
    decoder = EventDecoder(STORE, max_value_bytes=len(value))
    assert isinstance(decoder.decode(value), Decoded)
    refused = decoder.decode(value + b"\x00")
    assert refused == DecodeFailure(
        "undecodable", f"value of {len(value) + 1} bytes exceeds the {len(value)}-byte limit"
    )


def test_registered_writer_schema_that_does_not_resolve() -> None:
    """A producer registered an incompatible schema (subject at NONE): the schema's fault."""
    changed = json.loads(json.dumps(schema(2, "order")))
    changed["fields"] = [f for f in changed["fields"] if f["name"] != "sessionId"]
    client, (changed_id,) = registry_with(("loose-value", changed))
    record = {k: v for k, v in sample(2, "order").items() if k != "sessionId"}
    result = failure(encode_confluent(changed_id, changed, record), client)
    assert result.reason == "unknown_schema"
    assert result.message == (
        f"writer schema id:{changed_id} does not resolve to the reader: "
        "No default value for field sessionId in connect.signals.OrderEvent"
    )


def test_writer_schema_cache_stays_bounded_with_fresh_schema_dicts() -> None:
    from pipeline.codec import framing as codec

    original = schema(2, "order")
    expected = encode_single_object(original, sample(2, "order"))
    for _ in range(3 * codec.WRITER_CACHE_SIZE):
        fresh = json.loads(json.dumps(original))  # equal content, a new object every time
        assert encode_single_object(fresh, sample(2, "order")) == expected
    assert len(codec._BY_OBJECT) <= codec._BY_OBJECT_SIZE
    info = codec._parsed.cache_info()
    assert info.currsize <= codec.WRITER_CACHE_SIZE
    assert info.hits >= 3 * codec.WRITER_CACHE_SIZE - 1  # equal content: parsed once
