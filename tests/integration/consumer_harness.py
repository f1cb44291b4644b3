"""Running the pipeline against a real broker and the simulator, for integration tests."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from devtools import stack
from devtools.clickstream import GeneratedEvent
from devtools.producer import EventEncoder, produce_events

from pipeline.config import DEFAULT_AVRO_DIR, Settings
from pipeline.kafka.consumer import RunSummary, SignalConsumer
from pipeline.kafka.runner import build_processor
from pipeline.signals.mapping import MappingOptions, map_event
from pipeline.signals.outcomes import Rejection
from pipeline.signals.validation import validate_event

APP_KEY = "test-app-key"
API_KEY = "test-api-key"
REPO = Path(__file__).resolve().parents[2]


def new_topics(bootstrap: str, partitions: int = 3) -> tuple[str, str]:
    return stack.new_topics(bootstrap, "clicks", partitions)


def produce(bootstrap: str, topic: str, events: Iterable[GeneratedEvent]) -> int:
    return produce_events(bootstrap, topic, events, EventEncoder(DEFAULT_AVRO_DIR))


def settings_for(bootstrap: str, topic: str, dlq: str, graphql_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "topics": [topic],
        "dlq_topic": dlq,
        "group_id": f"group-{topic}",
        "connect_url": graphql_url,
        "connect_api_key": API_KEY,
        "default_app_key": APP_KEY,
        "session_timeout_ms": 6000,
        "linger_ms": 20,
        "retry_initial_backoff_ms": 20,
        "retry_max_backoff_ms": 500,
        "commit_interval_ms": 200,
        "drain_timeout_s": 10,
        "http_port": 0,
    }
    values.update(extra)
    return Settings(**values)


def run_until_idle(settings: Settings, idle_s: float = 3.0) -> RunSummary:
    consumer = SignalConsumer(settings, build_processor(settings))
    return consumer.run(stop_after_idle_s=idle_s)


class BackgroundConsumer:
    """A consumer in a thread of this process, stopped like SIGTERM would."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = SignalConsumer(settings, build_processor(settings))
        self.summary: RunSummary | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.summary = self.consumer.run()

    def start(self) -> BackgroundConsumer:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30) -> RunSummary:
        self.consumer.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "consumer did not stop"
        assert self.summary is not None
        return self.summary


def consumer_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """``connect-pipeline run`` in a child process, configured by environment."""
    return stack.start_pipeline(settings, log_path, cwd=REPO)


def expected_signals(events: Iterable[GeneratedEvent]) -> dict[str, dict[str, Any]]:
    """What the simulator must hold for these events: idempotency key -> signal."""
    expected: dict[str, dict[str, Any]] = {}
    for event in events:
        valid = validate_event(event.signal_type, event.record)
        if isinstance(valid, Rejection):
            continue
        mapped = map_event(valid, MappingOptions(APP_KEY))
        if not isinstance(mapped, Rejection):
            expected[mapped.idempotency_key] = json.loads(json.dumps(mapped.signal))
    return expected


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list[Any]:
    """Every record of a topic, counted by reading (never by watermarks)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(m for m in consumer.consume(500, timeout=0.5) if m.error() is None)
        # linger briefly: more than expected is a failure the caller must see
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            records.extend(m for m in consumer.consume(500, timeout=0.2) if m.error() is None)
    finally:
        consumer.close()
    return records


def wait_for(predicate: Any, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out: {message}")
