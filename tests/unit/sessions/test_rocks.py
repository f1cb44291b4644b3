"""The RocksDB tables: what stays in memory, what is written back, what is discarded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.sessions.changelog import decode, parse_key
from pipeline.sessions.rocks import RocksBackend, RocksTable, _sweep
from pipeline.sessions.session import Session
from pipeline.sessions.store import SessionStore
from tests.unit.sessions.script import add, feed, options, page, view


def test_only_what_changed_since_the_last_commit_is_in_memory(tmp_path: Path) -> None:
    backend = RocksBackend(tmp_path)
    store = SessionStore("clicks", options(), backend.tables(("clicks", 0)))
    feed(store, [add(f"s{n}", n, "A") for n in range(50)])
    table = store._open
    assert isinstance(table, RocksTable)
    assert len(table._cache) == 50 and len(table) == 50
    changes = store.take_changes()  # the commit: written back, dropped from memory
    assert len(table._cache) == 0 and len(table) == 50
    # what the database holds is what the changelog got
    on_disk = table.get(("app-1", "s7"))
    written = dict(changes)
    (raw,) = [v for k, v in written.items() if parse_key(k)[1] == ("app-1", "s7")]
    assert raw is not None and on_disk == decode(("app-1", "s7"), raw)
    # a later event changes the session read back from disk, and that is written
    feed(store, [view("s7", 60, "B")], first_offset=50)
    store.take_changes()
    session = table.get(("app-1", "s7"))
    assert isinstance(session, Session) and "B" in session.views
    backend.close()


def test_assign_discards_what_the_disk_holds_and_rebuilds_from_the_changelog(
    tmp_path: Path,
) -> None:
    backend = RocksBackend(tmp_path)
    partition = ("clicks", 3)
    store = SessionStore("clicks", options(), backend.tables(partition))
    feed(store, [add("s1", 0, "A"), add("s2", 1, "B")])
    changelog = store.take_changes()
    # ahead of the changelog: written to disk, its transaction never committed
    feed(store, [add("s3", 2, "C")], first_offset=2)
    store.take_changes()
    assert len(store._open) == 3
    restored = SessionStore.restore("clicks", options(), changelog, backend.tables(partition))
    assert restored.open_count == 2 and not restored.is_open(("app-1", "s3"))
    assert restored.is_open(("app-1", "s1"))
    backend.close()
    assert not backend.directory.exists()


def test_revoke_removes_the_partitions_database(tmp_path: Path) -> None:
    backend = RocksBackend(tmp_path)
    store = SessionStore("clicks", options(), backend.tables(("clicks", 0)))
    feed(store, [add("s1", 0, "A"), page("s1", 1)])
    store.take_changes()
    assert (backend.directory / "clicks-0").exists()
    backend.drop(("clicks", 0))
    assert not (backend.directory / "clicks-0").exists()
    backend.close()


def test_directories_of_processes_that_are_gone_are_swept(tmp_path: Path) -> None:
    (tmp_path / "999999999-deadbeef" / "clicks-0").mkdir(parents=True)
    (tmp_path / f"{os.getpid()}-cafe0000").mkdir()
    _sweep(tmp_path, alive=lambda pid: pid == os.getpid())
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{os.getpid()}-cafe0000"]


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_rocksdict(name: str, *args: object, **kwargs: object) -> object:
        if name == "rocksdict":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_rocksdict)
    with pytest.raises(RuntimeError, match=r"pip install '\.\[rocksdb\]'"):
        RocksBackend(Path("unused"))
