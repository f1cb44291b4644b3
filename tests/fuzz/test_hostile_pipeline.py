"""Hostile values through the running pipeline: real broker, real simulator.

The corpus, a few hundred seeded mutations of valid encodings and the valid encodings
themselves are produced to a topic; the consumer (this process, with the fuzz tests'
registry) must dead-letter every rejected value with its original bytes and the
rejection's reason and message, deliver every signal, lose nothing and keep running.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Producer

from pipeline.kafka.consumer import SignalConsumer
from pipeline.signals.mapping import MappedSignal
from pipeline.signals.outcomes import Rejection
from tests.fuzz.hostile import CORPUS, processor, valid_encodings, zigzag_varint
from tests.integration.consumer_harness import (
    API_KEY,
    APP_KEY,
    new_topics,
    read_topic,
    settings_for,
)

pytestmark = pytest.mark.integration


def _mutations(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    seeds = valid_encodings()
    out = []
    for _ in range(count):
        value = bytearray(rng.choice(seeds))
        at = rng.randrange(len(value))
        match rng.randrange(4):
            case 0:
                del value[at:]
            case 1:
                value[at] ^= rng.randrange(1, 256)
            case 2:
                value[at:at] = rng.randbytes(rng.randrange(1, 6))
            case _:
                value[at : at + 1] = zigzag_varint(rng.choice([2**31, -(2**31), 2**62]))
        out.append(bytes(value))
    return out


def _header(headers: list[tuple[str, bytes]] | None, name: str) -> str:
    return next(v.decode() for k, v in headers or [] if k == name)


@pytest.fixture
def simulator() -> Any:
    from connect_sim.testing import run_simulator

    with run_simulator(api_key=API_KEY, app_keys=[APP_KEY]) as sim:
        yield sim


def test_hostile_values_are_dead_lettered_with_their_reason_and_nothing_is_lost(
    kafka_bootstrap: str, simulator: Any
) -> None:
    values = [p.read_bytes() for p in sorted(CORPUS.glob("*.bin"))]
    values += _mutations(300) + list(valid_encodings()) + [b"", b"\x00", b"\xc3\x01"]
    outcomes = [processor().process(v) for v in values]
    rejected = {v: o for v, o in zip(values, outcomes, strict=True) if isinstance(o, Rejection)}
    mapped = [o for o in outcomes if isinstance(o, MappedSignal)]
    assert len(rejected) > 200 and len(mapped) > 40  # both paths are exercised

    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    for index, value in enumerate(values):
        producer.produce(topic, key=str(index).encode(), value=value)
    assert producer.flush(30) == 0

    settings = settings_for(
        kafka_bootstrap, topic, dlq, simulator.graphql_url, group_id=f"fuzz-{uuid.uuid4().hex}"
    )
    summary = SignalConsumer(settings, processor()).run(stop_after_idle_s=3.0)

    accepted = {row["key"] for row in simulator.signals()}
    dead = read_topic(kafka_bootstrap, dlq, len(values) - len(mapped))
    # Every rejected record is dead-lettered once, with its original bytes and reason.
    dead_rejected = Counter(m.value() or b"" for m in dead if (m.value() or b"") in rejected)
    assert dead_rejected == Counter(v for v in values if v in rejected)
    for record in dead:
        expected = rejected.get(record.value() or b"")
        if expected is not None:
            assert _header(record.headers(), "connect.signals.reason") == str(expected.reason)
            message = _header(record.headers(), "__connect.errors.exception.message")
            assert message == expected.message
    # Every signal reached Connect, or Connect refused it and it was dead-lettered: no loss.
    refused = [processor().process(m.value()) for m in dead if (m.value() or b"") not in rejected]
    assert all(isinstance(o, MappedSignal) for o in refused)
    refused_keys = {o.idempotency_key for o in refused if isinstance(o, MappedSignal)}
    assert accepted | refused_keys == {o.idempotency_key for o in mapped}
    assert sum(summary.dead_lettered.values()) == len(dead)
