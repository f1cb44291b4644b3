"""Shared pieces of the hostile-input tests: the processor under test, its invariants,
valid encodings to mutate, and Avro varint helpers.

The invariant every input must satisfy: ``EventProcessor.process`` returns a value
(a ``MappedSignal`` that can be sent, a ``Rejection`` whose message a user can act
on, or a deliberate ``Dropped``), never raises, and a rejection's message stays short
enough for a dead-letter header.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Final

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from devtools.clickstream import clickstream
from graphql import parse
from graphql.utilities import value_from_ast_untyped

from pipeline.codec.avro import EventDecoder, SchemaStore, encode_confluent, encode_single_object
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.connect.client import encode_signal
from pipeline.connect.document import inline_mutation, request_body
from pipeline.signals import catalog
from pipeline.signals.mapping import MappedSignal, MappingOptions
from pipeline.signals.outcomes import Reason, Rejection
from pipeline.signals.processor import Dropped, EventProcessor

CORPUS: Final = Path(__file__).resolve().parent / "corpus"
#: A rejection's message travels in a Kafka header and a log line.
MAX_MESSAGE_CHARS: Final = 4_096


@cache
def avro_schema(edition: int, signal_type: str) -> dict[str, Any]:
    path = DEFAULT_AVRO_DIR / f"v{edition}" / f"{catalog.SIGNALS[signal_type].record_name}.avsc"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def editions() -> list[tuple[int, str]]:
    return [
        (e, t) for e in (1, 2) for t in catalog.SIGNAL_TYPES if e == 2 or catalog.SIGNALS[t].in_v1
    ]


@cache
def registry() -> tuple[Any, dict[tuple[int, str], int]]:
    """The in-process mock registry with every schema; ids by (edition, type)."""
    client = SchemaRegistryClient.new_client({"url": "mock://"})
    ids = {}
    for edition, signal_type in editions():
        schema = avro_schema(edition, signal_type)
        subject = f"{schema['namespace']}.{schema['name']}"
        ids[(edition, signal_type)] = client.register_schema(
            subject, Schema(json.dumps(schema), "AVRO")
        )
    return client, ids


@cache
def processor() -> EventProcessor:
    client, _ = registry()
    decoder = EventDecoder(SchemaStore.from_directory(DEFAULT_AVRO_DIR), client)
    return EventProcessor(decoder, MappingOptions(default_app_key="fuzz-app"))


@cache
def sample_records() -> dict[tuple[int, str], dict[str, Any]]:
    """One valid record per (edition, type), from the synthetic clickstream."""
    found: dict[tuple[int, str], dict[str, Any]] = {}
    for ratio in (0.0, 1.0):
        for event in clickstream(800, seed=5, invalid_ratio=0, v1_ratio=ratio):
            found.setdefault((event.edition, event.signal_type), event.record)
    assert sorted(found) == sorted(editions()), sorted(set(editions()) - set(found))
    return found


def encode(edition: int, signal_type: str, record: dict[str, Any], confluent: bool) -> bytes:
    schema = avro_schema(edition, signal_type)
    if confluent:
        return encode_confluent(registry()[1][(edition, signal_type)], schema, record)
    return encode_single_object(schema, record)


@cache
def valid_encodings() -> tuple[bytes, ...]:
    """Every type and edition, in both framings: the seeds the mutations start from."""
    return tuple(
        encode(edition, signal_type, record, confluent)
        for (edition, signal_type), record in sorted(sample_records().items())
        for confluent in (False, True)
    )


def zigzag_varint(n: int) -> bytes:
    """Avro's long encoding (zig-zag, then base-128 varint)."""
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def check_outcome(value: bytes | None) -> object:
    """Run one value through the processor and assert the invariants; return the outcome."""
    outcome = processor().process(value)
    check_value(outcome)
    return outcome


def check_value(outcome: object) -> None:
    if isinstance(outcome, Rejection):
        assert isinstance(outcome.reason, Reason)
        assert outcome.problems, outcome
        message = outcome.message
        assert message and len(message) <= MAX_MESSAGE_CHARS, (len(message), message[:300])
        message.encode("utf-8")  # a header value: must be valid UTF-8
        outcome.field.encode("utf-8")
        return
    if isinstance(outcome, Dropped):
        return
    assert isinstance(outcome, MappedSignal), outcome
    check_signal(outcome.signal)


def check_signal(signal: dict[str, Any], graphql_too: bool = False) -> None:
    """A mapped signal can be sent: its JSON fragment and request body are exact."""
    fragment = encode_signal(signal)
    assert json.loads(fragment) == signal
    body = json.loads(request_body([signal]))
    assert body["variables"]["signals"] == [signal]
    if graphql_too:
        document = parse(inline_mutation([signal]))
        field = document.definitions[0].selection_set.selections[0]  # type: ignore[attr-defined]
        assert value_from_ast_untyped(field.arguments[0].value) == [signal]
