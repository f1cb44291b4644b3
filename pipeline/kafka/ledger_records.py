"""What a ledger record says, as bytes: pure encoding and decoding, and the horizon.

A ledger record (key = the signal's idempotency key) states "Connect accepted this
key". Since format 2 its value also says where the signal came from and how far its
writer had read, so that a reader can tell how much of the ledger it needs:

    version (1 byte, 2) | accepted_ms (int64) | topic id (uint32, CRC-32 of the name)
    | source partition (int32) | source offset (int64) | horizon gap (uint32)

``horizon = source offset + gap``: every ledger record of the same source partition
written *before* this one refers to a source offset below the horizon (the writer
carries the bound over from the ledger tail it loaded at assignment, see
``Horizons``). A reader that needs the keys at or past the committed offset ``C``
can therefore stop reading backwards at the latest record whose horizon is ``<= C``.
Backfills (replay, redrive) write gap ``NO_HORIZON``: their records are never a
stopping point, because they are written out of source order.

Format 1 (before the upgrade) is the 8-byte acceptance time alone: still understood,
with no source and no horizon (never a stopping point; a reader goes past them).
"""

from __future__ import annotations

import struct
import zlib
from typing import Final, NamedTuple

V1_SIZE: Final = 8
_V1: Final = struct.Struct(">q")
_V2: Final = struct.Struct(">BqIiqI")
V2_SIZE: Final = _V2.size  # 29 bytes
VERSION_2: Final = 2
NO_HORIZON: Final = 0xFFFF_FFFF
_MAX_GAP: Final = NO_HORIZON - 1


def topic_id(topic: str) -> int:
    """A source topic's 32-bit id in ledger records (several topics may share a ledger
    partition; two names colliding only make a reader read further back)."""
    return zlib.crc32(topic.encode())


class LedgerRecord(NamedTuple):
    """A decoded ledger value. ``topic`` is None for format 1 (no source known)."""

    accepted_ms: int
    topic: int | None = None
    partition: int = -1
    offset: int = -1
    horizon: int | None = None  # None: never a stopping point

    def stops(self, topic: int, partition: int, committed: int) -> bool:
        """Nothing before this record matters to a reader of (topic, partition) whose
        committed offset is ``committed``."""
        return (
            self.horizon is not None
            and self.horizon <= committed
            and self.partition == partition
            and self.topic == topic
        )


def encode(
    accepted_ms: int,
    topic: int,
    partition: int,
    offset: int,
    horizon: int | None,
) -> bytes:
    """A format-2 value; ``horizon`` None for backfills (replay, redrive)."""
    if horizon is None:
        gap = NO_HORIZON
    else:
        # the horizon must stay an upper bound: a gap that does not fit is written as
        # no horizon at all (the record is then never a stopping point)
        gap = horizon - offset
        if gap < 1 or gap > _MAX_GAP:
            gap = NO_HORIZON
    return _V2.pack(VERSION_2, accepted_ms, topic, partition, offset, gap)


def decode(value: bytes | None) -> LedgerRecord | None:
    """Both formats; None for anything else (skipped, as before)."""
    if value is None:
        return None
    if len(value) == V2_SIZE and value[0] == VERSION_2:
        _, accepted_ms, topic, partition, offset, gap = _V2.unpack(value)
        horizon = None if gap == NO_HORIZON else offset + gap
        return LedgerRecord(accepted_ms, topic, partition, offset, horizon)
    if len(value) == V1_SIZE:
        return LedgerRecord(_V1.unpack(value)[0])
    return None


def encode_v1(accepted_ms: int) -> bytes:
    """Format 1, as written before the upgrade (tests and benchmarks of old ledgers)."""
    return _V1.pack(accepted_ms)


class Horizons:
    """Per source partition, the horizon a live writer puts in its next ledger record.

    The invariant a reader relies on: a record's horizon is above the source offset of
    every earlier ledger record of its source partition that can still matter. A writer
    starts from the highest source offset in the tail it loaded at assignment (those
    are its predecessors' records; older ones are below the committed offset it starts
    from, so below any later commit), and raises it with each record it writes. It
    never lowers it, not even when an aborted transaction rewinds the partition.
    """

    __slots__ = ("_high",)

    def __init__(self) -> None:
        self._high: dict[tuple[str, int], int] = {}

    def assigned(self, topic: str, partition: int, loaded_high: int | None) -> None:
        """A new assignment: ``loaded_high`` is one past the highest source offset in
        the loaded tail (0 if none); None: unknown, its records get no horizon."""
        if loaded_high is None:
            self._high.pop((topic, partition), None)
        else:
            self._high[(topic, partition)] = loaded_high

    def revoked(self, topic: str, partition: int) -> None:
        self._high.pop((topic, partition), None)

    def next(self, topic: str, partition: int, offset: int) -> int | None:
        """The horizon of the ledger record of ``offset``, now being written; None for
        a partition not (or no longer) assigned here: a late record of a revoked
        partition knows nothing of what its new owner wrote, so it is no stopping point.
        """
        key = (topic, partition)
        high = self._high.get(key)
        if high is None:
            return None
        if offset >= high:
            high = self._high[key] = offset + 1
        return high
