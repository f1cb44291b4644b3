"""``each_store``: a test runs once with sessions in memory and once in RocksDB (the
same store contract, whatever table holds the states)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from pipeline.sessions import store as store_module
from pipeline.sessions.rocks import RocksBackend
from pipeline.sessions.tables import Tables


@pytest.fixture(params=["memory", "rocksdb"])
def each_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    if request.param == "memory":
        yield "memory"
        return
    backend = RocksBackend(tmp_path / "sessions")
    numbers = count()
    plain_init = store_module.SessionStore.__init__

    def init(
        self: store_module.SessionStore,
        topic: str,
        options: store_module.SessionOptions,
        tables: Tables | None = None,
    ) -> None:
        # every store the test makes (restores too) gets its own database
        plain_init(self, topic, options, tables or backend.tables((topic, next(numbers))))

    monkeypatch.setattr(store_module.SessionStore, "__init__", init)
    yield "rocksdb"
    backend.close()
