"""The session stage of one consumer: a store per assigned source partition.

What the consumer calls, in the order it happens:

- ``assign(partition, changelog records)`` when a partition arrives: its sessions as
  the changelog left them, and the derived signals still to settle;
- ``observe(partition, signal, offset, wall, record key)`` for every mapped event,
  before the ledger decides whether to send it (an event already delivered still
  counts for its session);
- ``tick(wall, held)`` every loop turn: quiet partitions' clocks follow the wall;
- ``changes()`` into the commit's transaction, then ``committed()`` or ``aborted()``;
- ``settled(...)`` when a derived signal is delivered, skipped or dead-lettered;
- ``revoke(partition)`` after its last commit.

Sessions must arrive on one partition: producers key events by sessionId. When they
do not, each partition sees part of a session and derives from that part; the
signals share their idempotency key, so at most one of each kind is sent, but it may
be wrong (a cart on one partition, its order on another). That is counted, not
guessed at: ``unkeyed`` (events whose Kafka key is not their sessionId) and ``split``
(events of a session open on another partition of this consumer).
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable

from pipeline.sessions.session import SessionKey
from pipeline.sessions.store import Counters, Derived, SessionOptions, SessionStore
from pipeline.sessions.tables import MemoryBackend, Partition, StateBackend
from pipeline.signals.mapping import MappedSignal

ChangelogRecord = tuple[bytes, bytes | None]
__all__ = ["ChangelogRecord", "Partition", "SessionStage"]


class SessionStage:
    def __init__(self, options: SessionOptions, backend: StateBackend | None = None) -> None:
        self.options = options
        self._backend = backend or MemoryBackend()  # where the states live
        self._stores: dict[Partition, SessionStore] = {}
        #: each store's open sessions, for the split check (one ``in`` per store): one
        #: list, changed in place, that every store reads (``SessionStore.elsewhere``)
        self._open_tables: list[Container[SessionKey]] = []
        self._retired = Counters()  # counts of revoked partitions' stores
        self.unkeyed = 0

    # --- partitions ------------------------------------------------------------------

    def assign(self, partition: Partition, records: Iterable[ChangelogRecord]) -> list[Derived]:
        """Restore the partition's sessions; returns the signals to send again."""
        tables = self._backend.tables(partition)
        store = SessionStore.restore(partition[0], self.options, records, tables)
        self._stores[partition] = store
        store.elsewhere = self._open_tables
        self._open_tables[:] = [s.open_states for s in self._stores.values()]
        return store.pending()

    def revoke(self, partition: Partition) -> None:
        store = self._stores.pop(partition, None)
        self._open_tables[:] = [s.open_states for s in self._stores.values()]
        if store is not None:
            _add(self._retired, store.counters)
            self._backend.drop(partition)

    def store(self, partition: Partition) -> SessionStore | None:
        return self._stores.get(partition)

    @property
    def partitions(self) -> list[Partition]:
        return sorted(self._stores)

    # --- events and time --------------------------------------------------------------

    def observe(
        self,
        partition: Partition,
        signal: MappedSignal,
        offset: int,
        wall_ms: int | None,
        record_key: bytes | None,
    ) -> list[Derived]:
        store = self._stores.get(partition)
        if store is None:
            return []
        if record_key != signal.signal["sessionId"].encode():
            self.unkeyed += 1
        return store.observe(signal, offset, wall_ms)

    @property
    def split(self) -> int:
        """Events of a session open on another partition of this consumer."""
        return self.counters().split

    def tick(
        self, wall_ms: int, held: Collection[Partition] = ()
    ) -> list[tuple[Partition, Derived]]:
        """Advance quiet partitions' clocks; ``held``: paused or behind, not quiet."""
        derived: list[tuple[Partition, Derived]] = []
        for partition, store in self._stores.items():
            if partition in held:
                store.hold(wall_ms)
            else:
                derived += [(partition, d) for d in store.advance(wall_ms)]
        return derived

    def settled(self, partition: Partition, derived: Derived) -> None:
        store = self._stores.get(partition)
        if store is not None:  # revoked: its new owner re-sends, the ledger decides
            store.settled(derived.key, derived.kind)

    # --- the changelog ------------------------------------------------------------------

    def changes(self) -> list[tuple[Partition, bytes, bytes | None]]:
        return [
            (partition, key, value)
            for partition, records in self.changes_by_partition()
            for key, value in records
        ]

    def changes_by_partition(self) -> list[tuple[Partition, list[ChangelogRecord]]]:
        """What ``changes`` returns, a list per partition (no tuple per record)."""
        return [(partition, store.take_changes()) for partition, store in self._stores.items()]

    def committed(self) -> None:
        for store in self._stores.values():
            store.committed()

    def aborted(self) -> list[tuple[Partition, Derived]]:
        """The transaction aborted: changes are written again; signals to send again."""
        for store in self._stores.values():
            store.aborted()
        return [(p, d) for p, store in self._stores.items() for d in store.pending()]

    # --- figures ----------------------------------------------------------------------

    @property
    def open_sessions(self) -> int:
        return sum(store.open_count for store in self._stores.values())

    def counters(self) -> Counters:
        total = Counters()
        _add(total, self._retired)
        for store in self._stores.values():
            _add(total, store.counters)
        return total


def _add(total: Counters, more: Counters) -> None:
    total.opened += more.opened
    total.closed += more.closed
    total.evicted += more.evicted
    total.late += more.late
    total.reused += more.reused
    total.split += more.split
    total.derived.update(more.derived)
