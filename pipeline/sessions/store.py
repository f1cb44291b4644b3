"""One source partition's sessions: open, closing, closed; and what changed.

A session expires ``gap`` after its latest event (event time) and is closed, its
signals derived, once the partition's watermark passes expiry + ``grace``: events
up to ``grace`` late still count. After that:

- an event of a closed session is counted (``late``, or ``reused`` when it comes
  after the session's expiry: the id came back after a gap) and changes nothing;
  the closed session's marker stays ``gap + grace`` past its expiry, after which any
  event of it would be late anyway, and is then forgotten (a tombstone);
- an event of no known session older than ``gap + grace`` behind the watermark is
  counted ``late`` and opens nothing.

The number of open sessions is capped: at the cap, the session idle longest is
closed early (``evicted``) and its signals derived as of the watermark.

The states live in two tables (``pipeline.sessions.tables``: dicts, or RocksDB on
disk); the expiry heaps and the counts stay in memory. Options and what a store
reports are in ``options.py``, the rebuild from the changelog in ``restore.py``.

The store never does I/O. The caller feeds it mapped signals with their offsets,
asks it to ``advance`` with the wall clock, writes ``take_changes()`` to the
changelog in the transaction that commits the offsets, then says ``committed()``
or ``aborted()``. Derived signals stay ``pending`` until ``settled``, so a crash
between closing and delivering re-emits them on restore.

Closing. A closed session's marker is written once its signals have settled, not
when it closes: until then the changelog keeps the session's open record, and that
record plus the clock record derive the same signals again after a restart. The open
record is the session as it closed (every change to a session marks it for the next
commit, and a closed session changes no more), and the clock record of any commit
after the close shows a watermark past the session's deadline (an event's offset
marks the clock, and so does a close by the wall clock), so a restore (``loaded``)
closes it again at once: same facts, same expiry, same signals, same idempotency
keys, which the ledger lets through only if Connect has not accepted them. A crash
before that commit finds the session open at its previous commit, and the events
after it are read again and close it as they did. An eviction is not repeatable (it
depends on the cap and the watermark of that moment), so it writes its marker with
its pending signals at once, as does a store whose closed table writes back (on
disk: it keeps what the changelog gets).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence

from pipeline.sessions.changelog import (
    ClockState,
    Closed,
    Pending,
    clock_record_key,
    encode,
    session_record_key,
)
from pipeline.sessions.clock import PartitionClock
from pipeline.sessions.deadlines import Deadlines
from pipeline.sessions.derive import BROWSE, content_signal, derived_contents, to_signal
from pipeline.sessions.options import Counters, Derived, SessionOptions, session_options
from pipeline.sessions.restore import restore
from pipeline.sessions.session import (
    CART_OPENING_TYPES,
    OPENING_TYPES,
    Session,
    SessionKey,
    apply,
    new_session,
    timestamp_ms,
)
from pipeline.sessions.tables import MemoryTable, StateTable, Tables
from pipeline.signals.mapping import MappedSignal

__all__ = ["Counters", "Derived", "SessionOptions", "SessionStore", "session_options"]


class SessionStore:
    """The sessions of one source partition (``topic`` names it in changelog keys)."""

    def __init__(self, topic: str, options: SessionOptions, tables: Tables | None = None) -> None:
        self.topic = topic
        self.options = options
        self.counters = Counters()
        self.clock = PartitionClock(options.quiet_ms, max_ahead_ms=options.gap_ms)
        self.applied_offset = -1
        # where the states live (pipeline.sessions.tables): dicts, or RocksDB
        self._open: StateTable[Session] = tables.open if tables else MemoryTable()
        self._closed: StateTable[Closed] = tables.closed if tables else MemoryTable()
        self._open_due = Deadlines()  # when each opened session closes (stale ones skipped)
        self._closed_due = Deadlines()  # when each closed session's marker is forgotten
        self._loading_open: list[tuple[int, SessionKey]] = []  # (restore)
        self._loading_closed: list[tuple[int, SessionKey]] = []
        self._dirty: set[SessionKey] = set()
        self._in_txn: set[SessionKey] = set()
        #: Opened since the last ``take_changes`` with no record of the key on its way
        #: or in the changelog but a tombstone: gone again by then, it needs none.
        self._unwritten: set[SessionKey] = set()
        self._clock_dirty = False
        self._window = options.gap_ms + options.grace_ms
        browse = BROWSE in options.derive.kinds
        self._opening = OPENING_TYPES if browse else CART_OPENING_TYPES
        #: The open tables of every store of the consumer (``SessionStage``: one list,
        #: shared): an event of no session open here is looked up there (split).
        self.elsewhere: Sequence[Container[SessionKey]] = ()

    # --- reading ----------------------------------------------------------------------

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def closed_count(self) -> int:
        return len(self._closed)

    def is_open(self, key: SessionKey) -> bool:
        return key in self._open

    @property
    def open_states(self) -> Container[SessionKey]:
        """The open sessions' keys (``in`` only)."""
        return self._open

    # --- events and time ------------------------------------------------------------

    def observe(
        self, signal: MappedSignal, offset: int | None = None, wall_ms: int | None = None
    ) -> list[Derived]:
        """Apply one mapped event; the signals of the sessions its time closes.

        ``offset``: the record's source offset; at or below ``applied_offset`` (read
        again after a restart or an abort) the event is in the state already.
        ``wall_ms``: None for replays and the offline check (event time only).
        """
        # Every event of the stream comes here: the common case, an event of an open
        # session, is this frame plus ``apply``.
        if offset is not None:
            if offset <= self.applied_offset:
                return []
            self.applied_offset = offset
            self._clock_dirty = True
        body = signal.signal
        at = timestamp_ms(body["signalContent"]["signalTimestamp"])
        watermark = self.clock.on_event(at, wall_ms)
        if self._open_due.next <= watermark or self._closed_due.next <= watermark:
            derived = self._expire(watermark)
        else:
            derived = []
        key = (body["appKey"], body["sessionId"])
        session = self._open.get(key)
        if session is None:  # (a key is open or closed, never both)
            return self._unopened(signal, key, at, derived)
        if at >= session.last + self.options.gap_ms:
            # The session had expired before this event (its grace still running):
            # it ends here, and this event of its id opens nothing.
            derived += self._close(session, session.last + self.options.gap_ms)
            self.counters.reused += 1
            return derived
        apply(session, signal, at)  # its heap entry moves when popped (see _expire)
        self._dirty.add(key)
        return derived

    def _unopened(
        self, signal: MappedSignal, key: SessionKey, at: int, derived: list[Derived]
    ) -> list[Derived]:
        """An event of no open session: a closed one's, one that opens, or neither."""
        elsewhere = self.elsewhere
        if len(elsewhere) > 1:  # open on another partition of this consumer: split
            for table in elsewhere:
                if key in table:
                    self.counters.split += 1
                    break
        closed = self._closed.get(key)
        if closed is not None:
            if at < closed.expiry:
                self.counters.late += 1
            else:
                self.counters.reused += 1
            return derived
        if signal.signal_type not in self._opening:
            return derived  # page views and the like: activity of nothing to derive
        if at + self._window <= self.clock.watermark:
            self.counters.late += 1
            return derived
        if len(self._open) >= self.options.max_open:
            derived += self._evict_oldest()
        session = new_session(key, at)
        self._open[key] = session
        if key not in self._dirty and key not in self._in_txn:
            self._unwritten.add(key)
        self.counters.opened += 1
        self._open_due.push(at + self._window, key)
        apply(session, signal, at)
        self._dirty.add(key)
        return derived

    def advance(self, wall_ms: int) -> list[Derived]:
        """The wall clock reads ``wall_ms``: close what a quiet partition's clock expires."""
        before = self.clock.watermark
        watermark = self.clock.on_wall(wall_ms)
        if watermark == before:
            return []
        # Not a change worth a changelog record by itself (an idle partition would write
        # one every commit): a restart waits the idle time again. Unless it closes a
        # session: the clock record then shows the close was due (see "Closing").
        derived = self._expire(watermark)
        if derived:
            self._clock_dirty = True
        return derived

    def hold(self, wall_ms: int) -> None:
        """The partition is paused or behind, not quiet (see clock.py)."""
        self.clock.hold(wall_ms)

    def close_all(self) -> list[Derived]:
        """Close every open session at its expiry (the end of an offline file)."""
        derived: list[Derived] = []
        for session in sorted((s for _, s in self._open.items()), key=lambda s: (s.last, s.key)):
            derived += self._close(session, session.last + self.options.gap_ms)
        return derived

    # --- closing ----------------------------------------------------------------------

    def _expire(self, watermark: int) -> list[Derived]:
        derived: list[Derived] = []
        due = self._open_due
        # One entry per open session, pushed when it opens: an entry whose session has
        # seen later events since is pushed again at its new deadline when it comes up
        # (one push per session, not one per event).
        while due.next <= watermark:
            deadline, _, key = due.pop()
            session = self._open.get(key)
            if session is None:
                continue
            if session.last + self._window > deadline:
                due.push(session.last + self._window, key)
            else:
                derived += self._close(session, session.last + self.options.gap_ms)
        due = self._closed_due
        while due.next <= watermark:
            deadline, _, key = due.pop()
            closed = self._closed.get(key)
            if closed is not None and closed.expiry + self._window == deadline:
                self._forget(key, closed)
        return derived

    def _close(self, session: Session, expiry: int, *, evicted: bool = False) -> list[Derived]:
        key = session.key
        del self._open[key]
        # An early close stamps the signal with the moment it was decided (never in
        # the future, never before the session's last event).
        stamp = max(session.last, min(expiry, self.clock.watermark)) if evicted else expiry
        derived = []
        pending: dict[str, Pending] = {}
        mapping = self.options.derive.mapping
        identity = session.identity
        for kind, content in derived_contents(session, self.options.derive):
            outcome = content_signal(key, identity, kind, content, stamp, mapping)
            source = (identity, content, stamp)  # its JSON form, made only if needed
            pending[kind] = one = Derived(key, kind, None, outcome, evicted, source=source)
            derived.append(one)
            self.counters.derived[kind] += 1
        expiry = session.last + self.options.gap_ms
        if pending and not evicted and not self._closed.writes_back:
            # No marker yet (see "Closing" above): the open record stands for it.
            self._closed[key] = Closed(expiry, pending, session)
        else:
            self._closed[key] = Closed(expiry, pending)
            self._dirty.add(key)
        self._closed_due.push(expiry + self._window, key)
        if len(self._closed_due) > 2 * len(self._closed) + 1024:
            self._compact()
        self.counters.closed += 1
        if len(self._closed) > self.options.max_open:
            self._forget_oldest_settled()
        return derived

    def _evict_oldest(self) -> list[Derived]:
        due = self._open_due
        while len(due):
            deadline, _, key = due.pop()
            session = self._open.get(key)
            if session is None:
                continue
            if session.last + self._window > deadline:
                due.push(session.last + self._window, key)
                continue
            self.counters.evicted += 1
            return self._close(session, session.last + self.options.gap_ms, evicted=True)
        return []

    def _forget(self, key: SessionKey, closed: Closed) -> None:
        if closed.pending:
            return  # forgotten when settled: its signals must survive a restart
        del self._closed[key]
        self._dirty.add(key)  # a tombstone

    def _forget_oldest_settled(self) -> None:
        kept = []
        due = self._closed_due
        while len(due) and len(self._closed) > self.options.max_open:
            entry = due.pop()
            closed = self._closed.get(entry[2])
            if closed is None or closed.expiry + self._window != entry[0]:
                continue
            if closed.pending:
                kept.append(entry)
            else:
                self._forget(entry[2], closed)
        for entry in kept:
            due.push_entry(entry)

    def _compact(self) -> None:
        """Drop the entries of forgotten markers once they outnumber the live ones."""
        self._closed_due.replace((c.expiry + self._window, k) for k, c in self._closed.items())

    # --- delivery ---------------------------------------------------------------------

    def settled(self, key: SessionKey, kind: str) -> None:
        """The derived signal is delivered, skipped by the ledger, or dead-lettered."""
        closed = self._closed.get(key)
        if closed is None or closed.pending.pop(kind, None) is None:
            return
        if closed.pending:
            if closed.session is None:
                self._dirty.add(key)  # the marker, with fewer signals
            return
        closed.session = None  # the marker is due now, settled
        self._dirty.add(key)
        if closed.expiry + self._window <= self.clock.watermark:
            self._forget(key, closed)

    def pending(self) -> list[Derived]:
        """Derived signals not yet settled (after a restore or an aborted transaction)."""
        mapping = self.options.derive.mapping
        derived: list[Derived] = []
        for key, closed in sorted(self._closed.items()):
            for kind, pending in sorted(closed.pending.items()):
                if isinstance(pending, dict):  # read back from the changelog
                    pending = Derived(key, kind, pending, to_signal(pending, mapping))
                assert isinstance(pending, Derived)
                derived.append(pending)
        return derived

    # --- the changelog ------------------------------------------------------------------

    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        """Changelog records of what changed since the last call (for the transaction)."""
        records: list[tuple[bytes, bytes | None]] = []
        topic, opened, closed = self.topic, self._open.get, self._closed.get
        unwritten = self._unwritten
        if self._open.writes_back or self._closed.writes_back:
            encoded: dict[SessionKey, bytes | None] = {}
            for key in self._dirty:  # (sorting them cost more than encoding them)
                state: Session | Closed | None = opened(key) or closed(key)
                value = encoded[key] = None if state is None else encode(state)
                if value is not None or key not in unwritten:
                    records.append((session_record_key(topic, key), value))
            self._open.flush(encoded)  # an on-disk table writes back what changed
            self._closed.flush(encoded)
        else:
            for key in self._dirty:
                state = opened(key) or closed(key)
                if state is not None:
                    records.append((session_record_key(topic, key), encode(state)))
                elif key not in unwritten:  # a tombstone for what the changelog holds
                    records.append((session_record_key(topic, key), None))
        self._unwritten = set()
        if self._clock_dirty:
            clock = ClockState(self.clock.watermark, self.applied_offset)
            records.append((clock_record_key(self.topic), encode(clock)))
        self._in_txn |= self._dirty
        self._dirty = set()
        self._clock_dirty = False
        return records

    def committed(self) -> None:
        """The transaction with the last changes committed."""
        self._in_txn = set()

    def aborted(self) -> None:
        """It aborted: those changes are written again with the next ones."""
        self._dirty |= self._in_txn
        self._in_txn = set()
        self._clock_dirty = True

    @classmethod
    def restore(
        cls,
        topic: str,
        options: SessionOptions,
        records: Iterable[tuple[bytes, bytes | None]],
        tables: Tables | None = None,
    ) -> SessionStore:
        """The store as the changelog records (read in order) leave it."""
        return restore(cls(topic, options, tables), records)

    def load(
        self, key: SessionKey | None, state: Session | Closed | ClockState, raw: bytes
    ) -> None:
        """One state read from the changelog (restore)."""
        if isinstance(state, ClockState):
            self.clock.watermark = state.watermark
            self.applied_offset = state.applied_offset
        elif isinstance(state, Closed):
            assert key is not None
            self._closed.load(key, state, raw)
            self._loading_closed.append((state.expiry + self._window, key))
        else:
            self._open.load(state.key, state, raw)
            self._loading_open.append((state.last + self._window, state.key))

    def loaded(self) -> None:
        """Every state is loaded: their deadlines in order."""
        self._open_due.replace(self._loading_open)
        self._closed_due.replace(self._loading_closed)
        self._loading_open, self._loading_closed = [], []
        # Sessions the clock had closed before the restart, their signals not settled:
        # closed again now, the same signals pending (see "Closing").
        self._expire(self.clock.watermark)
