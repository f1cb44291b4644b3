"""The session stage, seen from the consumer: a handful of calls at the right places.

The consumer core calls these and nothing else of the sessions:

- ``prepare()`` at start: the changelog topic (compacted, created when absent);
- ``assign(partitions)`` on assignment, before their records: sessions restored from
  the changelog, and the derived signals still to settle (sent again; the ledger
  skips those Connect has accepted);
- ``observe(message, signal)`` for each mapped event, before the ledger check;
- ``tick(held)`` each loop turn: quiet partitions' clocks follow the wall clock;
- ``write(produce)`` in each commit's transaction, then ``committed()`` or
  ``aborted()`` (which returns the signals to send again);
- ``revoke(partitions)`` after their last commit (or when lost).

Each derived signal comes back as an ``Emit``: the outcome to batch or dead-letter,
a Kafka ``Message`` standing for it (its source partition, the offset after which it
was derived, the session id as key, the derived event as JSON value: what a dead
letter of it carries), and ``settled``, to call when it is delivered, skipped or
dead-lettered. A derived signal holds back no offset: until settled it stays pending
in the changelog, which is what makes a crash between closing a session and
delivering its signal harmless.

Replays (``changelog=False``) derive from the range alone, in event time: no state
is read or written, no wall clock. A redrive does not derive (its records are dead
letters, not a clickstream).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Message

from pipeline.config import Settings
from pipeline.kafka.ledger import source_partition_count
from pipeline.kafka.producer_sink import DeliveryCallback, ProducerSink
from pipeline.kafka.session_changelog import (
    changelog_partition,
    changelog_topic,
    ensure_changelog_topic,
    read_changelog,
)
from pipeline.ops.session_metrics import register
from pipeline.sessions.stage import Partition, SessionStage
from pipeline.sessions.store import Derived, SessionOptions, session_options
from pipeline.sessions.tables import MemoryBackend, StateBackend
from pipeline.signals.mapping import MappedSignal, MappingOptions
from pipeline.signals.outcomes import Rejection

DERIVED_HEADER = "connect-signals-derived"


@dataclass(slots=True)
class Emit:
    outcome: MappedSignal | Rejection
    message: Message
    signal_type: str
    settled: Callable[[], None]


def build_session_hooks(
    settings: Settings, registry: Any, *, bounded: bool, redrive: bool
) -> SessionHooks | None:
    """The consumer's session stage, or None: derivation off, or a redrive."""
    app_key = settings.default_app_key.get_secret_value() if settings.default_app_key else None
    options = session_options(settings, MappingOptions(app_key, settings.allow_anonymous))
    if options is None or redrive:
        return None
    return SessionHooks(settings, options, changelog=not bounded, registry=registry)


class SessionHooks:
    def __init__(
        self,
        settings: Settings,
        options: SessionOptions,
        *,
        changelog: bool = True,
        registry: Any = None,
    ) -> None:
        self._conf = settings.kafka_common()
        self._settings = settings
        self.stage = SessionStage(options, state_backend(settings) if changelog else None)
        self._changelog = changelog
        self.topic = changelog_topic(settings)
        self._partitions = 1
        self._wall: int | None = None  # the wall clock (epoch ms) at the last tick
        if registry is not None:
            register(registry, self.stage)

    def prepare(self) -> None:
        if self._changelog:
            sources = source_partition_count(self._conf, self._settings)
            self._partitions = ensure_changelog_topic(self._conf, self.topic, sources)

    # --- partitions ---------------------------------------------------------------------

    def assign(self, partitions: Iterable[Partition]) -> list[Emit]:
        wanted = sorted(set(partitions))
        read: dict[int, list[tuple[bytes, bytes | None]]] = {}
        if self._changelog:
            numbers = {changelog_partition(p, self._partitions) for _, p in wanted}
            read = read_changelog(self._conf, self.topic, numbers)
        emits: list[Emit] = []
        for partition in wanted:
            records = read.get(changelog_partition(partition[1], self._partitions), [])
            emits += [self._emit(partition, d) for d in self.stage.assign(partition, records)]
        return emits

    def revoke(self, partitions: Iterable[Partition]) -> None:
        for partition in partitions:
            self.stage.revoke(partition)

    # --- events and time -----------------------------------------------------------------

    def observe(self, message: Message, signal: MappedSignal) -> list[Emit]:
        partition = (message.topic() or "", message.partition() or 0)
        # The wall clock as the last loop turn's tick read it (one read per poll, not
        # per record): it only caps events far ahead and restarts the idle wait, whose
        # scale is seconds.
        wall = self._wall
        if wall is None and self._changelog:
            wall = _now_ms()
        derived = self.stage.observe(partition, signal, message.offset() or 0, wall, message.key())
        return [self._emit(partition, d) for d in derived] if derived else []

    def tick(self, held: Collection[Partition]) -> list[Emit]:
        """``held``: partitions paused (backpressure, a Connect outage, a registry
        hold): not quiet, whatever the wall clock says."""
        if not self._changelog:
            return []  # a replay: event time only
        self._wall = _now_ms()
        return [self._emit(p, d) for p, d in self.stage.tick(self._wall, held)]

    # --- the transaction -------------------------------------------------------------------

    def write(
        self,
        produce: Callable[..., None] | ProducerSink,
        on_delivery: DeliveryCallback | None = None,
    ) -> int:
        """The changelog records of what changed, through ``produce`` (the consumer's
        transactional producer, or its ``produce`` method); returns how many.
        ``on_delivery``: told of each record's fate (outside a transaction)."""
        if not self._changelog:
            return 0
        sink = produce if isinstance(produce, ProducerSink) else getattr(produce, "__self__", None)
        written = 0
        topic = self.topic
        for (_, source), records in self.stage.changes_by_partition():
            partition = changelog_partition(source, self._partitions)
            if isinstance(sink, ProducerSink):  # a list per partition, positional calls
                sink.produce_records(topic, partition, records, on_delivery)
            else:
                assert callable(produce)
                for key, value in records:
                    produce(
                        topic, partition=partition, key=key, value=value, on_delivery=on_delivery
                    )
            written += len(records)
        return written

    def committed(self) -> None:
        self.stage.committed()

    def aborted(self) -> list[Emit]:
        return [self._emit(p, d) for p, d in self.stage.aborted()]

    # --- derived signals ---------------------------------------------------------------------

    def _emit(self, partition: Partition, derived: Derived) -> Emit:
        store = self.stage.store(partition)
        after = store.applied_offset if store is not None else -1
        message = DerivedMessage(
            topic=partition[0],
            partition=partition[1],
            offset=after,
            key=derived.key[1].encode(),
            headers=[(DERIVED_HEADER, derived.kind.encode())],
        )
        message.derived = derived

        def settled() -> None:
            self.stage.settled(partition, derived)

        return Emit(derived.outcome, message, derived.kind, settled)


class DerivedMessage(Message):
    """The Kafka message standing for a derived signal. Its value, the JSON-form event
    (what a dead letter of it carries), is made when first read: most are never."""

    __slots__ = ("_value", "derived")

    derived: Derived
    _value: bytes | None

    def value(self, *args: Any, **kwargs: Any) -> bytes | None:
        try:
            return self._value
        except AttributeError:
            self._value = orjson.dumps(self.derived.record)
            return self._value


def state_backend(settings: Settings) -> StateBackend:
    """Where sessions live: memory, or RocksDB on disk (PIPELINE_SESSION_STORE)."""
    if settings.session_store == "rocksdb":
        from pipeline.sessions.rocks import RocksBackend

        return RocksBackend(settings.session_store_path)
    return MemoryBackend()


def _now_ms() -> int:
    return int(time.time() * 1000)
