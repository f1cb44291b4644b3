"""Writing clickstream events to Kafka the way users' producers do (demo, tests, chaos).

Events are Avro: Confluent Schema Registry framing when a registry client is given,
single-object encoding otherwise. Keys are session ids, so a session stays on one
partition.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from devtools.clickstream import GeneratedEvent
from pipeline.signals import catalog


def load_schema(avro_dir: Path, edition: int, signal_type: str) -> dict[str, Any]:
    from pipeline.codec.schemas import schema_texts

    relative = f"v{edition}/{catalog.SIGNALS[signal_type].record_name}.avsc"
    text = schema_texts(avro_dir).get(relative)
    if text is None:
        raise FileNotFoundError(avro_dir / relative)
    schema: dict[str, Any] = json.loads(text)
    return schema


class EventEncoder:
    """Encodes generated events with the checked-in schemas, caching per schema."""

    def __init__(self, avro_dir: Path, registry: Any | None = None) -> None:
        self._avro_dir = avro_dir
        self._registry = registry
        self._schemas: dict[tuple[int, str], tuple[dict[str, Any], int | None]] = {}

    def _schema(self, edition: int, signal_type: str) -> tuple[dict[str, Any], int | None]:
        key = (edition, signal_type)
        if key not in self._schemas:
            schema = load_schema(self._avro_dir, edition, signal_type)
            schema_id = None
            if self._registry is not None:
                from confluent_kafka.schema_registry import Schema

                subject = f"{schema['namespace']}.{schema['name']}"
                schema_id = self._registry.register_schema(
                    subject, Schema(json.dumps(schema), "AVRO")
                )
            self._schemas[key] = (schema, schema_id)
        return self._schemas[key]

    def encode(self, event: GeneratedEvent) -> bytes:
        from pipeline.codec.avro import encode_confluent, encode_single_object

        schema, schema_id = self._schema(event.edition, event.signal_type)
        if schema_id is not None:
            return encode_confluent(schema_id, schema, event.record)
        return encode_single_object(schema, event.record)


def produce_events(
    bootstrap: str,
    topic: str,
    events: Iterable[GeneratedEvent],
    encoder: EventEncoder,
    *,
    extra_config: dict[str, Any] | None = None,
) -> int:
    """Produce and wait for every acknowledgement; returns how many were written."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            **(extra_config or {}),
        }
    )
    failures: list[str] = []

    def acknowledged(error: Any, _: Any) -> None:
        if error is not None:
            failures.append(str(error))

    count = 0
    for event in events:
        value = encoder.encode(event)
        key = str(event.record["sessionId"]).encode()
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=acknowledged)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(f"{remaining} unacknowledged, {len(failures)} failed: {failures[:3]}")
    return count
