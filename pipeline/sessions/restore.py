"""A partition's store rebuilt from its changelog records, in time proportional to
the live keys (compaction leaves about one record per open or recent session)."""

from __future__ import annotations

import gc
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pipeline.sessions.changelog import decode, parse_key

if TYPE_CHECKING:
    from pipeline.sessions.store import SessionStore


def restore(store: SessionStore, records: Iterable[tuple[bytes, bytes | None]]) -> SessionStore:
    """``store`` (new, empty) as the changelog records, read in order, leave it."""
    # Building 100,000 sessions triggers the cyclic collector again and again over
    # a growing heap (three times the decoding itself); nothing built here is
    # garbage, so it is paused for the restore.
    collecting = gc.isenabled()
    gc.disable()
    try:
        latest: dict[bytes, bytes] = {}
        for raw_key, value in records:
            if value is None:
                latest.pop(raw_key, None)
            else:
                latest[raw_key] = value
        for raw_key, value in latest.items():
            owner, key = parse_key(raw_key)
            if owner == store.topic:
                store.load(key, decode(key, value), value)
        store.loaded()
        return store
    finally:
        if collecting:
            gc.enable()
