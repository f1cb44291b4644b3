"""Derived abandonment through the real consumer, broker and HTTP: exactly the
expected signals, once each, across event-time and wall-clock expiry, late events, a
rebalance and SIGKILLs.

The expected signals come from the pure store fed the same events per partition
(``SessionStore`` + ``close_all``): the consumer must send exactly those, each
accepted once. Sessions are short (gap 4-8 s, grace 1 s) so quiet partitions close
them by the wall clock within seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from devtools.clickstream import GeneratedEvent
from devtools.producer import EventEncoder
from devtools.stack import loopback_http

from pipeline.config import DEFAULT_AVRO_DIR, Settings
from pipeline.kafka.consumer import Bounds, SignalConsumer
from pipeline.kafka.runner import build_processor
from pipeline.kafka.session_changelog import changelog_topic, read_changelog
from pipeline.sessions.changelog import parse_key
from pipeline.sessions.derive import KINDS, DeriveOptions
from pipeline.sessions.store import SessionOptions, SessionStore
from pipeline.signals.mapping import MappedSignal, MappingOptions
from tests.integration.consumer_harness import (
    APP_KEY,
    BackgroundConsumer,
    consumer_process,
    new_topics,
    settings_for,
    wait_for,
)
from tests.unit.sessions.script import APP, add, feed, ms, order, page, view

pytestmark = pytest.mark.integration

DERIVED = tuple(KINDS["both"])


class Recorder:
    """Connect on 127.0.0.1: records every accepted signal by idempotency key."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.signals: dict[str, dict[str, Any]] = {}
        self.outage = threading.Event()  # set: 503 to every request
        self.refused: Counter[str] = Counter()  # keys answered 503
        self.lock = threading.Lock()
        self.url = ""

    def derived(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {k: s for k, s in self.signals.items() if k.startswith(DERIVED)}

    def answer(self, keys: list[str], body: dict[str, Any]) -> int:
        with self.lock:
            if self.outage.is_set():
                self.refused.update(keys)
                return 503
            self.accepted.update(keys)
            for key, signal in zip(keys, body["variables"]["signals"], strict=True):
                self.signals[key] = signal
        return 200


@contextmanager
def recorder() -> Iterator[Recorder]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
            header = self.headers.get("signal-idempotency-keys", "")
            keys = [k.strip().strip('"') for k in header.split(",") if k.strip()]
            status = rec.answer(keys, body)
            document: dict[str, Any] = (
                {"data": {"createSignals": {"accepted": len(keys)}}}
                if status == 200
                else {"errors": [{"message": "unavailable"}]}
            )
            raw = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with loopback_http(Handler) as base:
        rec.url = f"{base}/graphql"
        yield rec


def produce_to(bootstrap: str, topic: str, events: list[tuple[int, dict[str, Any]]]) -> None:
    """JSON-form script events, Avro encoded, keyed by sessionId, to chosen partitions."""
    encoder = EventEncoder(DEFAULT_AVRO_DIR)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for partition, event in events:
        record = {k: v for k, v in event.items() if k != "signalType"}
        record["eventTime"] = datetime.fromisoformat(record["eventTime"])
        value = encoder.encode(GeneratedEvent(event["signalType"], record, 2))
        producer.produce(topic, key=event["sessionId"].encode(), value=value, partition=partition)
    assert producer.flush(30) == 0


def expected(
    events: list[tuple[int, dict[str, Any]]], gap_s: float, grace_s: float
) -> dict[str, dict[str, Any]]:
    """What the pure store derives from each partition's events, once all expire."""
    options = SessionOptions(
        DeriveOptions(KINDS["both"], MappingOptions(APP_KEY)),
        gap_ms=round(gap_s * 1000),
        grace_ms=round(grace_s * 1000),
    )
    out: dict[str, dict[str, Any]] = {}
    for partition in sorted({p for p, _ in events}):
        store = SessionStore("t", options)
        derived = feed(store, [e for p, e in events if p == partition]) + store.close_all()
        for d in derived:
            assert isinstance(d.outcome, MappedSignal)
            out[d.outcome.idempotency_key] = json.loads(json.dumps(d.outcome.signal))
    return out


def derive_settings(
    bootstrap: str, topic: str, dlq: str, url: str, gap_s: float, **extra: Any
) -> Settings:
    return settings_for(
        bootstrap,
        topic,
        dlq,
        url,
        derive_abandonment="both",
        session_gap_s=gap_s,
        session_grace_s=1,
        **extra,
    )


def test_a_scripted_clickstream_gives_exactly_the_expected_signals_across_a_rebalance(
    kafka_bootstrap: str,
) -> None:
    gap = 8.0  # partition 1's sessions stay open until a second replica takes it over
    window = gap + 1
    events = [
        # partition 0: event time closes the first three sessions
        (0, add("paid", 0, "A")),
        (0, add("paid", 0.5, "B")),
        (0, order("paid", 1)),  # cart then order: nothing
        (0, add("cart", 0, "A", 2)),
        (0, add("cart", 0.2, "C", price=4.5)),  # cart then nothing
        (0, add("late", 0.1, "L")),
        (0, view("driver", window + 5, "D")),  # the watermark passes the three above
        (0, order("late", 0.3)),  # later than the grace: counted, the cart stays
        # partition 1: goes quiet; the wall clock closes its sessions
        (1, view("browse", 0, "A")),
        (1, view("browse", 0.1, "B")),
        (1, view("browse", 0.2, "A")),  # views only
        (1, view("viewed-added", 0, "V")),
        (1, add("viewed-added", 0.5, "V")),  # views then add: a cart
        (1, page("pages", 0)),  # nothing to derive
    ]
    want = expected(events, gap, 1)
    assert sorted(s["sessionId"] for s in want.values()) == [
        "browse",
        "cart",
        "driver",
        "late",
        "viewed-added",
    ]
    topic, dlq = new_topics(kafka_bootstrap, partitions=2)
    produce_to(kafka_bootstrap, topic, events)
    with recorder() as connect:
        replica = {
            name: derive_settings(
                kafka_bootstrap, topic, dlq, connect.url, gap, transactional_id=f"{topic}-{name}"
            )
            for name in ("a", "b")
        }
        first = BackgroundConsumer(replica["a"]).start()
        second = None
        try:
            wait_for(lambda: len(connect.accepted) >= len(events), 60, "the events delivered")
            # event time closed partition 0's first three sessions already
            closed = {"cart", "late"}
            assert {s["sessionId"] for s in connect.derived().values()} <= closed
            second = BackgroundConsumer(replica["b"]).start()  # takes one partition over
            moved = second.consumer._sessions
            assert moved is not None
            wait_for(lambda: len(moved.stage.partitions) == 1, 60, "a partition moved")
            # with sessions still open, restored from the changelog (1 on p0, 2 on p1)
            assert moved.stage.open_sessions >= 1
            wait_for(lambda: len(connect.derived()) >= len(want), 60, "derived signals")
            time.sleep(1.0)  # anything more would be a failure: let it arrive
        finally:
            first.stop()
            if second is not None:
                second.stop()
    assert connect.derived() == want
    assert all(connect.accepted[k] == 1 for k in want)
    assert len(connect.accepted) == len(want) + len(events)  # and every event, once


def _run(settings: Settings, tmp_path: Path, name: str) -> Any:
    return consumer_process(settings, tmp_path / f"{name}.log")


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_sigkill_mid_session_and_mid_expiry_sends_each_signal_once(
    kafka_bootstrap: str, tmp_path: Path, store: str
) -> None:
    gap = 4.0
    first = [(0, add("s1", 0, "A")), (0, view("s2", 0, "B"))]
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_to(kafka_bootstrap, topic, first)
    state = tmp_path / "session-state"  # rocksdb: each run rebuilds it from the changelog
    with recorder() as connect:
        settings = derive_settings(
            kafka_bootstrap,
            topic,
            dlq,
            connect.url,
            gap,
            session_store=store,
            session_store_path=state,
        )
        # 1. killed during the sessions: their events delivered, the state committed
        process = _run(settings, tmp_path, "first")
        try:
            wait_for(lambda: len(connect.accepted) >= 2, 60, "the events delivered")
            time.sleep(0.6)  # a few commit cycles (200 ms), well before the expiry (~6 s)
        finally:
            process.kill()
            process.wait(10)
        assert connect.derived() == {}

        # 2. killed during the expiry: derived, refused by Connect, committed as pending
        connect.outage.set()
        process = _run(settings, tmp_path, "second")
        try:
            wait_for(
                lambda: sum(1 for k in connect.refused if k.startswith(DERIVED)) >= 2,
                60,
                "the derived signals attempted",
            )
            time.sleep(0.6)  # commit cycles: the closed sessions, pending, in the changelog
        finally:
            process.kill()
            process.wait(10)
        assert connect.derived() == {}

        # 3. a clean run: each abandoned session's signal, once
        connect.outage.clear()
        process = _run(settings, tmp_path, "third")
        try:
            wait_for(lambda: len(connect.derived()) >= 2, 60, "the derived signals")
            time.sleep(1.0)
        finally:
            process.terminate()
            process.wait(30)
    want = expected(first, gap, 1)
    assert connect.derived() == want
    assert all(connect.accepted[k] == 1 for k in want)
    if store == "rocksdb":  # the killed runs' databases are swept, the clean one removed
        assert state.exists() and list(state.iterdir()) == []


def _changelog(settings: Settings) -> dict[tuple[str, str] | None, dict[str, Any] | None]:
    """The session changelog as a restore reads it (read_committed): latest per key."""
    topic = changelog_topic(settings)
    latest: dict[tuple[str, str] | None, dict[str, Any] | None] = {}
    for key, value in read_changelog(settings.kafka_common(), topic, [0])[0]:
        latest[parse_key(key)[1]] = None if value is None else json.loads(value)
    return latest


def test_sigkill_after_a_close_before_its_marker_sends_each_signal_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The moment the closed marker is not written yet: the signals derived and
    refused, the commits after the close done (the open records and a clock past
    their deadline in the changelog, no marker). A restart derives them again from
    that, sends each once; a kill after they settled sends nothing more."""
    gap = 4.0
    events = [(0, add("s1", 0, "A")), (0, view("s2", 0, "B"))]
    keys = [(APP, "s1"), (APP, "s2")]
    deadline = ms(gap + 1)  # the sessions close once the watermark passes it
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_to(kafka_bootstrap, topic, events)
    want = expected(events, gap, 1)
    with recorder() as connect:
        settings = derive_settings(kafka_bootstrap, topic, dlq, connect.url, gap)

        def closed_unsettled() -> bool:
            log = _changelog(settings)
            clock = log.get(None)
            return clock is not None and clock["w"] >= deadline

        # 1. the events delivered, then Connect refuses; killed once the changelog
        # shows the close (clock past the deadline) and the signals are refused
        process = _run(settings, tmp_path, "first")
        try:
            wait_for(lambda: len(connect.accepted) >= 2, 60, "the events delivered")
            connect.outage.set()
            wait_for(
                lambda: sum(1 for k in connect.refused if k.startswith(DERIVED)) >= 2,
                60,
                "the derived signals attempted",
            )
            wait_for(closed_unsettled, 30, "a commit after the close")
        finally:
            process.kill()
            process.wait(10)
        log = _changelog(settings)
        for key in keys:  # the open records stand for the closed sessions: no marker
            record = log[key]
            assert record is not None and "closed" not in record
        assert connect.derived() == {}

        def settled(key: tuple[str, str]) -> bool:  # a marker without signals, or forgotten
            log = _changelog(settings)
            value = log.get(key, {})
            return value is None or value.get("pending") == {}

        # 2. restarted: derived again from those records, each sent once
        connect.outage.clear()
        process = _run(settings, tmp_path, "second")
        try:
            wait_for(lambda: len(connect.derived()) >= 2, 60, "the derived signals")
            wait_for(lambda: all(settled(k) for k in keys), 30, "the settled markers committed")
        finally:
            process.kill()
            process.wait(10)

        # 3. killed after they settled: a restart sends nothing more
        process = _run(settings, tmp_path, "third")
        try:
            time.sleep(8.0)  # the join (~3 s on Tansu), the restore, commit cycles
        finally:
            process.terminate()
            process.wait(30)
    assert connect.derived() == want
    assert all(connect.accepted[k] == 1 for k in want)


def test_a_replay_derives_the_same_signals_for_the_same_range(kafka_bootstrap: str) -> None:
    gap = 4.0
    events = [
        (0, add("cart", 0, "A", 2)),
        (0, view("browse", 0.5, "B")),
        (0, add("paid", 1, "C")),
        (0, order("paid", 2)),
        (0, view("driver", gap + 1 + 5, "D")),  # event time closes the three above
        (0, add("open", gap + 6, "E")),  # still open at the end of the range
    ]
    options = SessionOptions(
        DeriveOptions(KINDS["both"], MappingOptions(APP_KEY)), gap_ms=4_000, grace_ms=1_000
    )
    store = SessionStore("t", options)
    want = {
        d.outcome.idempotency_key: json.loads(json.dumps(d.outcome.signal))
        for d in feed(store, [e for _, e in events])  # event time only, no close at the end
        if isinstance(d.outcome, MappedSignal)
    }
    assert sorted(s["sessionId"] for s in want.values()) == ["browse", "cart"]
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    produce_to(kafka_bootstrap, topic, events)
    bounds = Bounds({(topic, 0): 0}, {(topic, 0): len(events)})
    runs = []
    for run in range(2):
        with recorder() as connect:
            settings = derive_settings(
                kafka_bootstrap,
                topic,
                dlq,
                connect.url,
                gap,
                group_id=f"replay-{topic}-{run}",
                ledger_topic=f"replay-{topic}-{run}-ledger",  # nothing delivered before
            )
            consumer = SignalConsumer(settings, build_processor(settings), bounds=bounds)
            consumer.run()
            runs.append(connect.derived())
    assert runs[0] == runs[1] == want
