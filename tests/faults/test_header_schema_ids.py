"""Schema ids in the ``__value_schema_id`` record header, against a real HTTP registry
stand-in (``fake_registry``) and the embedded broker (issue 15).

The records are written the way users' producers write them: confluent-kafka's own
AvroSerializer configured with ``header_schema_id_serializer`` (the GUID form), plus the
id form built by hand (0x00 and the 4-byte id, which Confluent's deserializer reads too).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Final

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    header_schema_id_serializer,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from devtools.clickstream import GeneratedEvent, clickstream
from devtools.producer import load_schema

from pipeline.codec.avro import (
    UNAVAILABLE_HOLD_S,
    DecodeFailure,
    EventDecoder,
    SchemaRegistryUnavailable,
    SchemaStore,
    encode_confluent,
)
from pipeline.codec.framing import VALUE_SCHEMA_ID_HEADER, encode_header_id
from pipeline.codec.registry import decoder_registry_client
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.kafka.consumer import SignalConsumer
from pipeline.kafka.dead_letters import header_value
from pipeline.kafka.redrive import run_redrive
from tests.faults.fake_registry import fake_registry, schema, server_error
from tests.integration.consumer_harness import (
    API_KEY,
    APP_KEY,
    BackgroundConsumer,
    expected_signals,
    new_topics,
    read_topic,
    settings_for,
    wait_for,
)

H: Final = VALUE_SCHEMA_ID_HEADER
TRACEPARENT: Final = b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"
STORE: Final = SchemaStore.from_directory(DEFAULT_AVRO_DIR)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _body(event: GeneratedEvent) -> bytes:
    """The bare Avro body: what a header-id producer writes as the value."""
    writer = load_schema(DEFAULT_AVRO_DIR, event.edition, event.signal_type)
    return encode_confluent(0, writer, event.record)[5:]


def test_a_guid_is_asked_at_its_own_endpoint_held_while_down_and_unknown_when_not_found() -> None:
    event = next(e for e in clickstream(20, seed=3, invalid_ratio=0) if e.edition == 2)
    text = json.dumps(load_schema(DEFAULT_AVRO_DIR, 2, event.signal_type))
    guid = str(uuid.uuid4())
    headers = [(H, encode_header_id(guid=uuid.UUID(guid).bytes))]
    clock = Clock()
    with fake_registry() as (registry, url):
        decoder = EventDecoder(STORE, decoder_registry_client(url), clock=clock)
        registry.answers[guid] = server_error()
        with pytest.raises(SchemaRegistryUnavailable) as raised:
            decoder.decode(_body(event), headers)
        assert raised.value.schema_id == guid and "schema GUID" in str(raised.value)
        with pytest.raises(SchemaRegistryUnavailable):
            decoder.decode(_body(event), headers)  # held: not asked again within the hold
        assert registry.requests[guid] == 1
        clock.now += UNAVAILABLE_HOLD_S
        registry.answers[guid] = schema(text)
        decoded = decoder.decode(_body(event), headers)
        assert getattr(decoded, "writer_key", None) == f"guid:{guid}", decoded
        assert registry.requests[guid] == 2
        other = str(uuid.uuid4())  # no answer set: the registry's own 40403
        failure = decoder.decode(_body(event), [(H, encode_header_id(guid=uuid.UUID(other).bytes))])
        assert isinstance(failure, DecodeFailure) and failure.reason == "unknown_schema"
        assert failure.message == f"header {H}: schema GUID {other} not found"


# --- end to end: the broker, the registry over HTTP, the Connect simulator -------------


@pytest.fixture
def simulator() -> Any:
    from connect_sim.testing import run_simulator

    with run_simulator(api_key=API_KEY, app_keys=[APP_KEY]) as sim:
        yield sim


def _paused(consumer: SignalConsumer) -> float:
    value = consumer.metrics.registry.get_sample_value("connect_signals_paused_partitions")
    return value or 0.0


#: Malformed headers and what their dead letter must say.
BAD_HEADERS: Final = [
    (b"\x05\x00\x00\x00\x01", "undecodable", f"header {H}: unknown magic byte 0x05"),
    (b"\x01" + bytes(8), "undecodable", f"header {H}: 9 bytes with magic 0x01, not 17"),
    (b"\x00\x00\x07", "undecodable", f"header {H}: 3 bytes with magic 0x00, not 5"),
]


@pytest.mark.integration
def test_header_ids_reach_connect_and_bad_headers_are_dead_lettered(
    kafka_bootstrap: str, simulator: Any
) -> None:
    events = list(clickstream(40, seed=43, invalid_ratio=0, v1_ratio=0.2))
    assert {e.edition for e in events} == {1, 2}
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    # The producer's side: confluent-kafka's serializer, its own (in-process) registry.
    writer_registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    serializers: dict[tuple[int, str], AvroSerializer] = {}
    texts: dict[tuple[int, str], str] = {}
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for number, event in enumerate(events):
        kind = (event.edition, event.signal_type)
        if kind not in serializers:
            texts[kind] = json.dumps(load_schema(DEFAULT_AVRO_DIR, *kind))
            serializers[kind] = AvroSerializer(
                writer_registry,
                texts[kind],
                conf={"schema.id.serializer": header_schema_id_serializer},
            )
        written: list[tuple[str, bytes]] = []  # the serializer puts the GUID form here
        context = SerializationContext(topic, MessageField.VALUE, written)
        value = serializers[kind](event.record, context)
        headers = [("traceparent", TRACEPARENT)]
        if number % 2:  # the id form, built by hand: 0x00 and the registry id
            subject = f"{topic}-value"
            registered = writer_registry.lookup_schema(subject, Schema(texts[kind], "AVRO"))
            headers.append((H, encode_header_id(schema_id=registered.schema_id)))
        else:
            headers.extend(written)
        producer.produce(
            topic, key=event.record["sessionId"].encode(), value=value, headers=headers
        )
    unknown_guid = uuid.uuid4()
    bad = [
        *BAD_HEADERS,
        (
            encode_header_id(guid=unknown_guid.bytes),
            "unknown_schema",
            f"header {H}: schema GUID {unknown_guid} not found",
        ),
    ]
    # other sessions than the good events': the redrive below is no ledger skip
    strays = list(clickstream(len(bad), seed=44, invalid_ratio=0, v1_ratio=0))
    for event, (raw, _, _) in zip(strays, bad, strict=True):
        producer.produce(topic, key=b"bad", value=_body(event), headers=[(H, raw)])
    assert producer.flush(30) == 0

    with fake_registry() as (registry, registry_url):
        registry.default = server_error()  # down at first: the partition is held
        settings = settings_for(
            kafka_bootstrap,
            topic,
            dlq,
            simulator.graphql_url,
            schema_registry_url=registry_url,
            group_id=f"group-{uuid.uuid4().hex[:8]}",
        )
        member = BackgroundConsumer(settings).start()
        try:
            wait_for(lambda: sum(registry.requests.values()) >= 2, 30, "asked while down")
            wait_for(lambda: _paused(member.consumer) == 1, 10, "held, and /metrics says so")
            assert not simulator.signals()
            for text in texts.values():
                registered = writer_registry.lookup_schema(f"{topic}-value", Schema(text, "AVRO"))
                registry.answers[registered.schema_id] = schema(text)
                registry.answers[str(registered.guid)] = schema(text)
            registry.default = None  # back: the registry's own 40403 for the rest
            expected = expected_signals(events)
            wait_for(lambda: len(simulator.signals()) == len(expected), 30, "all delivered")
        finally:
            summary = member.stop()
        accepted = {row["key"]: row["signal"] for row in simulator.signals()}
        assert accepted == expected
        assert summary.dead_lettered_total == len(bad)
        assert any(isinstance(k, str) for k in registry.requests)  # GUIDs were asked for
        assert any(isinstance(k, int) for k in registry.requests)  # and ids
        dead = read_topic(kafka_bootstrap, dlq, len(bad))
        assert len(dead) == len(bad)
        said = sorted(
            (
                header_value(d.headers(), "connect.signals.reason") or "",
                header_value(d.headers(), "__connect.errors.exception.message") or "",
            )
            for d in dead
        )
        for (reason, message), (_, want_reason, want_start) in zip(
            said, sorted(bad, key=lambda b: (b[1], b[2])), strict=True
        ):
            assert reason == want_reason and message.startswith(want_start), said
        for record in dead:  # the source's header stays on its dead letter
            assert dict(record.headers())[H] in {raw for raw, _, _ in bad}

        # The GUID registered after all: a redrive decodes the dead letter by its header.
        stray = strays[-1]
        writer = load_schema(DEFAULT_AVRO_DIR, stray.edition, stray.signal_type)
        registry.answers[str(unknown_guid)] = schema(json.dumps(writer))
        redriven = run_redrive(settings, ["unknown_schema"])
    assert redriven.delivered_total == 1 and redriven.dead_lettered_total == 0
    wanted = set(expected_signals([stray]))
    assert wanted and wanted <= {row["key"] for row in simulator.signals()}
