"""Session states on disk: RocksDB through ``rocksdict`` (``pip install .[rocksdb]``).

For more open sessions than memory holds (``PIPELINE_SESSION_STORE=rocksdb``), as
Quix Streams keeps its state: one database per assigned source partition, under a
directory per process in ``PIPELINE_SESSION_STORE_PATH``. In memory stay only the
states read or changed since the last commit (written back then, with the bytes the
changelog gets) and the store's expiry heap (~200 B per session).

The changelog topic stays the source of truth: on assign the partition's database is
created empty and filled from the changelog, never reused. A database left on disk
may be ahead of the changelog (written before a transaction that aborted, or by a
process killed before its commit) or behind it (another replica owned the partition
since); verifying it would read the changelog all the same, so rebuilding costs no
more and cannot be wrong. On-disk state buys memory, not restart time.
"""

from __future__ import annotations

import atexit
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic

import orjson

from pipeline.sessions.changelog import Closed, decode, encode
from pipeline.sessions.session import Session, SessionKey
from pipeline.sessions.tables import Partition, Tables, V

_OPEN = b"o"
_CLOSED = b"c"


def _rocksdict() -> Any:
    try:
        import rocksdict
    except ImportError as missing:  # an optional extra
        raise RuntimeError(
            "PIPELINE_SESSION_STORE=rocksdb needs the rocksdb extra: pip install '.[rocksdb]'"
        ) from missing
    return rocksdict


class RocksTable(Generic[V]):
    """One kind of state (open or closed) in a partition's database, keys prefixed."""

    writes_back = True

    def __init__(self, db: Any, prefix: bytes, kind: type[V]) -> None:
        self._db = db
        self._prefix = prefix
        self._kind: type[V] = kind
        self._cache: dict[SessionKey, V] = {}  # read or changed since the last flush
        self._count = 0

    def _key(self, key: SessionKey) -> bytes:
        return self._prefix + orjson.dumps(key)

    def _decode(self, key: SessionKey, raw: bytes) -> V:
        state = decode(key, raw)
        assert isinstance(state, self._kind)
        return state

    def get(self, key: SessionKey) -> V | None:
        state = self._cache.get(key)
        if state is None:
            raw = self._db.get(self._key(key))
            if raw is None:
                return None
            # kept until the flush: the caller may change it in place
            state = self._cache[key] = self._decode(key, raw)
        return state

    def __setitem__(self, key: SessionKey, state: V) -> None:
        if key not in self._cache and self._db.get(self._key(key)) is None:
            self._count += 1
        self._cache[key] = state

    def __delitem__(self, key: SessionKey) -> None:
        if self._cache.pop(key, None) is None and self._db.get(self._key(key)) is None:
            raise KeyError(key)
        self._db.delete(self._key(key))
        self._count -= 1

    def __contains__(self, key: object) -> bool:
        if key in self._cache:
            return True
        if not isinstance(key, tuple):
            return False
        return self._db.get(self._key(key)) is not None

    def __len__(self) -> int:
        return self._count

    def items(self) -> Iterator[tuple[SessionKey, V]]:
        cached = dict(self._cache)
        yield from cached.items()
        for raw_key, raw in self._db.items(from_key=self._prefix):
            if not raw_key.startswith(self._prefix):
                break
            app, session = orjson.loads(raw_key[len(self._prefix) :])
            key = (app, session)
            if key not in cached:
                yield key, self._decode(key, raw)

    def load(self, key: SessionKey, state: V, raw: bytes) -> None:
        self._db[self._key(key)] = raw
        self._count += 1

    def flush(self, encoded: Mapping[SessionKey, bytes | None]) -> None:
        for key, state in self._cache.items():
            if key in encoded:
                raw = encoded[key]
                self._db[self._key(key)] = raw if raw is not None else encode(state)
        self._cache.clear()


class RocksBackend:
    """A database per assigned partition under ``root/<pid>-<random>``."""

    def __init__(self, root: Path) -> None:
        self._rocksdict = _rocksdict()
        root.mkdir(parents=True, exist_ok=True)
        _sweep(root)
        self.directory = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.directory.mkdir()
        self._dbs: dict[Partition, Any] = {}
        atexit.register(self.close)

    def _path(self, partition: Partition) -> Path:
        return self.directory / f"{partition[0]}-{partition[1]}"

    def tables(self, partition: Partition) -> Tables:
        self.drop(partition)  # never reused: rebuilt from the changelog
        rd = self._rocksdict
        options = rd.Options(raw_mode=True)
        options.create_if_missing(True)
        db = rd.Rdict(str(self._path(partition)), options)
        self._dbs[partition] = db
        return Tables(RocksTable(db, _OPEN, Session), RocksTable(db, _CLOSED, Closed))

    def drop(self, partition: Partition) -> None:
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
        path = self._path(partition)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        for partition in list(self._dbs):
            self.drop(partition)
        shutil.rmtree(self.directory, ignore_errors=True)


def _sweep(root: Path, alive: Callable[[int], bool] | None = None) -> None:
    """Remove the directories of processes that are gone (killed before their exit)."""
    alive = alive or _alive
    for child in root.iterdir():
        pid, _, _ = child.name.partition("-")
        if child.is_dir() and pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(child, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
