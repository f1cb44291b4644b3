"""Schema registry look-ups off the poll loop.

A look-up waits for the registry (up to its client's timeout: seconds). Made in the
loop, it would stop every partition, not only the one whose record needs it. Here
each look-up runs on a thread of its own; the loop waits for it a little (a healthy
registry answers in milliseconds) and otherwise gets ``LookupPending``: the decoder
then holds that record's partition (``SchemaRegistryUnavailable``), the other
partitions go on, and the record asks again after its hold, when the answer (or the
registry's error) is handed over, once.

Only the loop thread calls a ``BackgroundLookups``; the threads touch nothing but
their ``Future``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any, Final

SchemaId = int | str
#: (id) -> the registry's answer; raises what the registry client raises.
Fetch = Callable[[SchemaId], Any]

#: How long the loop waits for a new look-up before holding the record.
INLINE_WAIT_S: Final = 0.05
#: Look-ups running at once. Each partition waits on one record at most, so this is
#: reached only by look-ups left behind (partitions revoked meanwhile); past it the
#: record waits for a slot.
MAX_RUNNING: Final = 64


class LookupPending(Exception):
    """The registry has not answered yet: hold the record and ask again later."""


class BackgroundLookups:
    """``lookups(id)``: the registry's answer for an id, its error raised, or
    ``LookupPending``. One look-up per id at a time."""

    def __init__(
        self, fetch: Fetch, *, wait_s: float = INLINE_WAIT_S, max_running: int = MAX_RUNNING
    ) -> None:
        self._fetch = fetch
        self._wait_s = wait_s
        self._max_running = max_running
        self._running: dict[SchemaId, Future[Any]] = {}

    @property
    def running(self) -> int:
        return len(self._running)

    def __call__(self, schema_id: SchemaId) -> Any:
        future = self._running.get(schema_id)
        if future is None:
            future = self._start(schema_id)
            wait([future], timeout=self._wait_s)
        if not future.done():
            raise LookupPending(schema_id)
        del self._running[schema_id]
        return future.result()  # the answer, or the registry client's error raised

    def _start(self, schema_id: SchemaId) -> Future[Any]:
        if len(self._running) >= self._max_running:
            for done in [k for k, f in self._running.items() if f.done()]:
                del self._running[done]  # answers nobody came back for
            if len(self._running) >= self._max_running:
                raise LookupPending(schema_id)
        future: Future[Any] = Future()
        self._running[schema_id] = future

        def run() -> None:
            try:
                future.set_result(self._fetch(schema_id))
            except BaseException as error:  # handed to the loop, raised there
                future.set_exception(error)

        threading.Thread(target=run, name="registry-lookup", daemon=True).start()
        return future
