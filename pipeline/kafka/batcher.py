"""Pure batching: signals in, closed batches out, by count, bytes and linger."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from pipeline.connect.client import Batch

#: Room for the request around the signals: the query document, the operation name and
#: the JSON wrapper (``pipeline.connect.client`` builds it; a test checks it fits).
ENVELOPE_BYTES: Final = 512


class Batcher:
    """The open batch and the closed ones waiting to be sent. No I/O; clock passed in."""

    def __init__(
        self,
        max_signals: int,
        max_bytes: int,
        linger_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_signals = max_signals
        self._max_bytes = max_bytes
        #: the largest signal that can be sent at all (alone in a batch)
        self.max_fragment_bytes = max_bytes - 1 - ENVELOPE_BYTES
        self._linger_s = linger_s
        self._clock = clock
        self._keys: list[str] = []
        self._fragments: list[bytes] = []
        self._refs: list[Any] = []
        self._bytes = ENVELOPE_BYTES
        self._opened = 0.0
        self.ready: deque[Batch] = deque()

    def fits(self, fragment: bytes) -> bool:
        """Whether a signal can be sent at all (alone in a batch)."""
        return len(fragment) <= self.max_fragment_bytes

    def add(self, key: str, fragment: bytes, ref: Any) -> None:
        size = len(fragment) + 1
        if self._keys and self._bytes + size > self._max_bytes:
            self.close()
        if not self._keys:
            self._opened = self._clock()
        self._keys.append(key)
        self._fragments.append(fragment)
        self._refs.append(ref)
        self._bytes += size
        if len(self._keys) >= self._max_signals:
            self.close()

    def add_many(self, keys: list[str], fragments: list[bytes], refs: list[Any]) -> None:
        """``add`` for each, in order (a consumed batch's signals): whole runs at a time
        while they fit, one by one from where the bytes limit would close a batch."""
        at, count = 0, len(keys)
        while at < count:
            if not self._keys:
                self._opened = self._clock()
            end = min(count, at + self._max_signals - len(self._keys))
            size = sum(map(len, fragments[at:end])) + end - at
            if self._bytes + size > self._max_bytes:
                for index in range(at, count):
                    self.add(keys[index], fragments[index], refs[index])
                return
            self._keys += keys[at:end]
            self._fragments += fragments[at:end]
            self._refs += refs[at:end]
            self._bytes += size
            at = end
            if len(self._keys) >= self._max_signals:
                self.close()

    def due_in(self) -> float | None:
        """Seconds until the open batch is due to close (None: no batch open)."""
        if not self._keys:
            return None
        return self._opened + self._linger_s - self._clock()

    def close_if_due(self) -> None:
        if self._keys and self._clock() - self._opened >= self._linger_s:
            self.close()

    def close(self) -> None:
        if self._keys:
            self.ready.append(Batch(self._keys, self._fragments, self._refs))
            self._keys, self._fragments, self._refs = [], [], []
            self._bytes = ENVELOPE_BYTES

    @property
    def open(self) -> bool:
        return bool(self._keys)

    @property
    def empty(self) -> bool:
        return not self._keys and not self.ready

    def clear(self) -> list[Batch]:
        """Everything, open or ready, handed back unsent (a rewind)."""
        self.close()
        batches = list(self.ready)
        self.ready.clear()
        return batches
