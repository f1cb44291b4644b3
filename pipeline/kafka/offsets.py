"""Which offset of a partition may be committed: only behind finished records.

A record is finished when it is delivered, dead-lettered (and the dead-letter write
acknowledged) or deliberately dropped. Records finish out of order (batches run
concurrently), so the committable offset is the first unfinished one.
"""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """The open records of one partition, in offset order."""

    __slots__ = ("_done", "_open", "committed", "next_offset")

    def __init__(self) -> None:
        self._open: deque[int] = deque()
        self._done: set[int] = set()
        self.next_offset: int | None = None  # one past the highest offset seen
        self.committed: int | None = None  # the last offset handed to a commit

    def track(self, offset: int) -> None:
        self._open.append(offset)
        self.next_offset = offset + 1

    def finish(self, offset: int) -> None:
        if self._open and self._open[0] == offset:
            self._open.popleft()
            while self._open and self._open[0] in self._done:
                self._done.discard(self._open.popleft())
        else:
            self._done.add(offset)

    @property
    def pending(self) -> int:
        return len(self._open) - len(self._done)

    def committable(self) -> int | None:
        """The offset to commit (the next to read), or None before the first record."""
        if self._open:
            return self._open[0]
        return self.next_offset

    def to_commit(self) -> int | None:
        """The committable offset if it moved since the last commit."""
        offset = self.committable()
        if offset is None or offset == self.committed:
            return None
        return offset
