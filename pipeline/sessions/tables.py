"""Where one partition's session states live: the narrow interface the store uses.

A store keeps two tables, open sessions and closed markers, by session key. It reads
a state with ``get``, changes it in place, and says which keys changed when it
writes them to the changelog (``flush``, with their encoded values): a table on disk
writes back there, so a session is decoded and encoded once per commit, not per
event. ``load`` takes a state read from the changelog at restore, with its bytes.

``MemoryTable`` is a dict (the default: ~2.5 kB per open session). The on-disk
table (``pipeline.sessions.rocks``, RocksDB) keeps only what changed since the last
commit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from pipeline.sessions.changelog import Closed
from pipeline.sessions.session import Session, SessionKey

V = TypeVar("V", Session, Closed)
Partition = tuple[str, int]


class StateTable(Protocol[V]):
    #: ``flush`` writes the changed states somewhere (else it need not be called)
    writes_back: bool

    def get(self, key: SessionKey) -> V | None: ...

    def __setitem__(self, key: SessionKey, state: V) -> None: ...

    def __delitem__(self, key: SessionKey) -> None: ...

    def __contains__(self, key: object) -> bool: ...

    def __len__(self) -> int: ...

    def items(self) -> Iterator[tuple[SessionKey, V]]:
        """Every state (rare paths: restore's pending signals, the end of a file)."""
        ...

    def load(self, key: SessionKey, state: V, raw: bytes) -> None:
        """A state read from the changelog at restore (``raw``: its changelog value)."""
        ...

    def flush(self, encoded: Mapping[SessionKey, bytes | None]) -> None:
        """The keys of ``encoded`` changed (None: deleted); written to the changelog."""
        ...


class MemoryTable(dict[SessionKey, V]):
    """States in a dict: nothing to write back."""

    writes_back = False

    def items(self) -> Iterator[tuple[SessionKey, V]]:  # type: ignore[override]
        pairs = cast("list[tuple[SessionKey, V]]", list(super().items()))
        return iter(pairs)  # a copy: the store deletes while it goes

    def load(self, key: SessionKey, state: V, raw: bytes) -> None:
        self[key] = state

    def flush(self, encoded: Mapping[SessionKey, bytes | None]) -> None:
        pass


@dataclass(slots=True)
class Tables:
    open: StateTable[Session]
    closed: StateTable[Closed]


class StateBackend(Protocol):
    """Makes a partition's tables on assign and drops them on revoke."""

    def tables(self, partition: Partition) -> Tables: ...

    def drop(self, partition: Partition) -> None: ...


class MemoryBackend:
    def tables(self, partition: Partition) -> Tables:
        return Tables(MemoryTable(), MemoryTable())

    def drop(self, partition: Partition) -> None:
        pass
