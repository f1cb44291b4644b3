"""The reference: the pipeline as a user would first write it, for the throughput ratio.

    python -m benchmarks.reference --bootstrap HOST:PORT --topic T --registry URL \\
        --url http://127.0.0.1:PORT/graphql --api-key K --app-key A --events N

A plain loop over the same backlog as the benchmark: confluent-kafka's own
``AvroDeserializer`` with a ``SchemaRegistryClient`` (writer schema only, as the
library does by default), one pydantic model validated per event, a hand-written
mapping, and one ``createSignals`` call per event through one keep-alive
``httpx.Client``. Auto-commit, no dead-letter topic, no retries, no idempotency
headers: a rejected event is logged and skipped. The signal type comes from the
record name of the writer schema (the registry client caches it), since the topic
carries several types. It is not a strawman: the client keeps its connection open,
and everything that is cached in a real deployment is cached here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

import httpx
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from pydantic import BaseModel, ConfigDict

MUTATION = (
    "mutation CreateSignals($signals: [SignalInput!]!) "
    "{ createSignals(signals: $signals) { signalIds } }"
)
ENVELOPE = {"eventId", "sessionId", "identifiableAttributes", "appKey", "eventTime"}


class ClickEvent(BaseModel):
    """The one pydantic validation: the envelope typed, the signal's fields passed on."""

    model_config = ConfigDict(extra="allow")

    eventId: str | None = None
    sessionId: str
    identifiableAttributes: dict[str, str | None]
    appKey: str | None = None
    eventTime: datetime


def signal_type_of(registry: SchemaRegistryClient, value: bytes) -> str:
    schema = registry.get_schema(int.from_bytes(value[1:5], "big"))  # cached by the client
    name = str(json.loads(schema.schema_str or "{}")["name"]).rpartition(".")[2]
    return name[0].lower() + name[1:].removesuffix("Event")


def to_signal(event: ClickEvent, signal_type: str, app_key: str) -> dict[str, Any]:
    content = {k: v for k, v in (event.model_extra or {}).items() if v is not None}
    stamp = event.eventTime.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "appKey": event.appKey or app_key,
        "identifiableAttributes": {k: v for k, v in event.identifiableAttributes.items() if v},
        "sessionId": event.sessionId,
        "signalContent": {"signalType": signal_type, **content, "signalTimestamp": stamp},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    registry = SchemaRegistryClient({"url": args.registry})
    deserialize = AvroDeserializer(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([args.topic])
    http = httpx.Client(headers={"X-API-Key": args.api_key}, timeout=httpx.Timeout(10.0))
    seen = accepted = rejected = 0
    first_message = None
    try:
        while seen < args.events:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            first_message = first_message or time.time()
            seen += 1
            value = message.value() or b""
            context = SerializationContext(message.topic() or "", MessageField.VALUE)
            try:
                record = deserialize(value, context)
                event = ClickEvent.model_validate(record)
                signal = to_signal(event, signal_type_of(registry, value), args.app_key)
                body = {"query": MUTATION, "variables": {"signals": [signal]}}
                response = http.post(args.url, json=body)
                document = response.json()
            except Exception as error:
                rejected += 1
                print(f"skipped: {type(error).__name__}", file=sys.stderr)
                continue
            if response.status_code == 200 and not document.get("errors"):
                accepted += 1
            else:
                rejected += 1
    finally:
        consumer.close()
        http.close()
    finished = time.time()
    return {
        "events": seen,
        "accepted": accepted,
        "rejected": rejected,
        "seconds_from_start": finished - started,
        "seconds_from_first_message": finished - (first_message or finished),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default="reference")
    parser.add_argument("--registry", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--events", type=int, default=10_000)
    print(json.dumps(run(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
