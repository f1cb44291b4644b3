"""Latency from produce to acceptance at a steady produce rate.

One ``connect-pipeline run`` process is started and warmed up (group joined, a few
events accepted). Then events are produced at a steady rate (default 1,000/s, in
10 ms ticks) with ``eventTime`` set to the moment each is handed to the producer;
the simulator records when it accepted each signal (``receivedAt``), and the
signal carries ``signalTimestamp`` (the event time, in milliseconds). Latency is
their difference, per accepted signal: producer linger, broker, consumer, batching
linger (``PIPELINE_LINGER_MS``) and the HTTP call, on one clock.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer
from devtools.clickstream import clickstream

from benchmarks.stack import Stack


@dataclass(frozen=True)
class LatencyResult:
    rate: float  # events/s asked for
    achieved_rate: float  # events/s actually produced
    produced: int
    accepted: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


def _timestamp_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_latency(
    stack: Stack,
    *,
    rate: float = 1_000,
    duration_s: float = 30,
    seed: int = 11,
    overrides: dict[str, str] | None = None,
) -> LatencyResult:
    topic = stack.create_topic(6, prefix="latency")
    group = f"latency-{uuid.uuid4().hex[:8]}"
    encoder = stack.encoder()
    producer = Producer({"bootstrap.servers": stack.bootstrap, "linger.ms": 5, "acks": "all"})
    total = int(rate * duration_s)
    events = clickstream(total + 200, seed=seed, invalid_ratio=0.0)

    def send(n: int) -> int:
        sent = 0
        for event in events:
            record: dict[str, Any] = {**event.record, "eventTime": datetime.now(UTC)}
            value = encoder.encode(replace(event, record=record))
            producer.produce(topic, key=str(record["sessionId"]).encode(), value=value)
            sent += 1
            if sent >= n:
                break
        producer.poll(0)
        return sent

    stack.sim.reset()
    process = stack.start_pipeline(topic, group, **(overrides or {}))
    try:
        # warm-up: the group is joined and the path is hot before the clock starts
        warm = send(100)
        producer.flush(10)
        stack.wait_accepted(warm, time.monotonic(), [process], timeout_s=120)
        stack.sim.reset()
        produced, tick = 0, 0.01
        start = time.monotonic()
        while produced < total:
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            if due > produced:
                produced += send(due - produced)
            time.sleep(max(0.0, start + (produced / rate) - time.monotonic()) or tick / 10)
        elapsed = time.monotonic() - start
        producer.flush(10)
        stack.wait_accepted(produced, time.monotonic(), [process], timeout_s=60)
        rows = stack.sim.signals()
    finally:
        process.stop()
    latencies = sorted(
        (row["receivedAt"] - _timestamp_s(row["signal"]["signalContent"]["signalTimestamp"])) * 1000
        for row in rows
    )
    return LatencyResult(
        rate,
        produced / elapsed,
        produced,
        len(rows),
        statistics.median(latencies),
        _percentile(latencies, 0.99),
        latencies[-1],
    )
