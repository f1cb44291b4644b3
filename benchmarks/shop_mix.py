"""A shop's clickstream for the peer benchmark (variants PM and PMD, ``benchmarks.peers_shop``).

The harness's own workload is 200,000 add-to-carts, each of its own session: with
derivation on, two in three end in an abandoned cart, which doubles the output by
construction. A shop's stream is sessions of page views, searches, product views,
configurations, add-to-carts, some orders and a few errors: ``devtools.clickstream``
with every event valid, in the current edition, and without the shop's own
abandonment events (deriving those is the point). At pace 1 a visitor's clicks are
seconds apart and 20-40 sessions interleave, so 200,000 events span about 29 h of
event time: replayed as a backlog, sessions close during the run with the default
30-minute gap, and about 3 % of events close an abandoned session.

What a run must deliver is known before it starts: every event maps to one signal,
and the derived ones are what the pure session store derives from each partition's
events in offset order by event time alone. That is what the consumer does while its
partitions are busy; the wall clock moves a quiet partition's watermark only after
the grace (60 s), so the sessions still open at the stream's end are not counted.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from confluent_kafka import Producer
from devtools.clickstream import GeneratedEvent, clickstream
from devtools.producer import EventEncoder

from pipeline.config import DEFAULT_AVRO_DIR, Settings
from pipeline.kafka.runner import build_processor
from pipeline.sessions.options import session_options
from pipeline.sessions.store import SessionStore
from pipeline.signals.mapping import MappedSignal, MappingOptions

PARTITIONS: Final = 6
#: The shop's own abandonment events: left out, the pipeline derives them.
SENT_BY_THE_SHOP_ONLY: Final = frozenset({"cartAbandonment", "browseAbandonment"})


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    key: bytes  # the sessionId
    value: bytes  # Avro single-object encoded with the project's avro/ schemas


@dataclass(frozen=True, slots=True)
class ShopStream:
    records: list[Record]
    types: Counter[str]  # events per signal type
    sessions: int
    event_time_span_s: float


@dataclass(frozen=True, slots=True)
class Expected:
    """The signals a run of the stream delivers with given settings."""

    source: int  # one per event that maps
    derived: Counter[str] = field(default_factory=Counter)  # per kind, closed in the stream
    open_at_end: int = 0  # sessions the stream leaves open (closed by the wall clock later)

    @property
    def total(self) -> int:
        return self.source + sum(self.derived.values())


def partition_of(session_id: str, partitions: int) -> int:
    """The partition a keyed record lands on (as librdkafka's default partitioner puts it)."""
    return zlib.crc32(session_id.encode()) % partitions


def shop_events(count: int, *, seed: int = 7, pace: float = 1.0) -> Iterator[GeneratedEvent]:
    """``count`` valid current-edition events of interleaved shop sessions."""
    stream = clickstream(2**62, seed=seed, invalid_ratio=0.0, v1_ratio=0.0, pace=pace)
    produced = 0
    for event in stream:
        if produced == count:
            return
        if event.signal_type in SENT_BY_THE_SHOP_ONLY:
            continue
        produced += 1
        yield event


def shop_stream(
    count: int,
    *,
    seed: int = 7,
    pace: float = 1.0,
    partitions: int = PARTITIONS,
    avro_dir: Path = DEFAULT_AVRO_DIR,
) -> ShopStream:
    encoder = EventEncoder(avro_dir)
    records: list[Record] = []
    types: Counter[str] = Counter()
    sessions: set[str] = set()
    first = last = None
    for event in shop_events(count, seed=seed, pace=pace):
        session_id = str(event.record["sessionId"])
        sessions.add(session_id)
        types[event.signal_type] += 1
        first = first or event.record["eventTime"]
        last = event.record["eventTime"]
        records.append(
            Record(partition_of(session_id, partitions), session_id.encode(), encoder.encode(event))
        )
    span = (last - first).total_seconds() if first and last else 0.0
    return ShopStream(records, types, len(sessions), span)


def expected_signals(stream: ShopStream, settings: Settings) -> Expected:
    """What the consumer configured by ``settings`` delivers from ``stream`` before
    its partitions go quiet: the project's own decoder, rules and session store."""
    processor = build_processor(settings)
    app_key = settings.default_app_key.get_secret_value() if settings.default_app_key else None
    options = session_options(settings, MappingOptions(app_key, settings.allow_anonymous))
    topic = settings.source_topics[0]
    stores: dict[int, SessionStore] = {}
    offsets: Counter[int] = Counter()
    source = 0
    derived: Counter[str] = Counter()
    for record in stream.records:
        signal = processor.process(record.value)
        if not isinstance(signal, MappedSignal):
            continue  # dead-lettered: never at the sink (the shop mix has none)
        source += 1
        offset = offsets[record.partition]
        offsets[record.partition] += 1
        if options is None:
            continue
        store = stores.get(record.partition)
        if store is None:
            store = stores[record.partition] = SessionStore(topic, options)
        for closed in store.observe(signal, offset=offset):
            if isinstance(closed.outcome, MappedSignal):  # a rejected one is dead-lettered
                derived[closed.kind] += 1
    open_at_end = sum(store.open_count for store in stores.values())
    return Expected(source, derived, open_at_end)


def produce(bootstrap: str, topic: str, stream: ShopStream, **config: Any) -> None:
    """Every record to its partition; returns once the broker acknowledged them all."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 50,
            "queue.buffering.max.messages": 500_000,
            **config,
        }
    )
    failures: list[str] = []

    def acknowledged(error: Any, _: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for n, record in enumerate(stream.records):
        while True:
            try:
                producer.produce(
                    topic,
                    key=record.key,
                    value=record.value,
                    partition=record.partition,
                    on_delivery=acknowledged,
                )
                break
            except BufferError:
                producer.poll(0.1)
        if n % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or failures:
        raise RuntimeError(f"{remaining} unacknowledged, {len(failures)} failed: {failures[:3]}")
