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

Format 3: one record per (delivered batch, source partition) instead of one per
signal (one librdkafka produce per batch: the produce was the largest settle cost).
Its key is a hash of its value (unique, so compaction removes nothing; the same
batch written again after an abort is the same record); its value:

    version (1 byte, 3) | accepted_ms (int64) | topic id (uint32) | source partition
    (int32) | first source offset (int64) | horizon gap (uint32, from the first offset)
    | count (uint16) | count x offset delta (uint32, from the first offset)
    | count x key length (uint8) | the idempotency keys, concatenated (ASCII)

About 5 bytes plus the key a signal (~20 KB for 500 UUID keys). The keys are stored
whole, not as digests: the index's digest is the process's own ``hash()`` (SipHash
under a random per-process secret, so colliding keys cannot be crafted from outside);
a digest written to the broker would need a process-independent hash on the hot path.
The horizon bounds every *earlier* record's offsets, as in format 2; the record's own
entries are always kept by a reader that reaches it.

Format 1 (before the upgrade) is the 8-byte acceptance time alone: still understood,
with no source and no horizon (never a stopping point; a reader goes past them).

Readers before format 3 skip its records (their ``decode`` answers None for an
unknown value): a replica of that version would not see what a format-3 writer
delivered. Hence ``PIPELINE_LEDGER_FORMAT`` (docs/idempotency.md: the two-step upgrade).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple

from pipeline.kafka.ledger_index import key_digest

V1_SIZE: Final = 8
_V1: Final = struct.Struct(">q")
_V2: Final = struct.Struct(">BqIiqI")
V2_SIZE: Final = _V2.size  # 29 bytes
VERSION_2: Final = 2
NO_HORIZON: Final = 0xFFFF_FFFF
_MAX_GAP: Final = NO_HORIZON - 1
VERSION_3: Final = 3
_V3_HEAD: Final = struct.Struct(">BqIiqIH")
V3_HEAD_SIZE: Final = _V3_HEAD.size  # 31 bytes
#: Entries in one format-3 record at most (a larger group is written as several).
V3_MAX_ENTRIES: Final = 500
_MAX_DELTA: Final = 0xFFFF_FFFF
_MAX_KEY: Final = 0xFF
FORMATS: Final = (2, 3)


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
    #: format 3: (source offset, idempotency key) of each signal, by offset; ``offset``
    #: is then the highest of them
    entries: tuple[tuple[int, str], ...] | None = None

    def keyed(self, key: bytes) -> Sequence[tuple[int, str]]:
        """(source offset, idempotency key) of each signal this record holds, given the
        record's Kafka key (the idempotency key itself before format 3)."""
        if self.entries is not None:
            return self.entries
        return ((self.offset, key.decode()),)

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
    """All three formats; None for anything else (skipped, as before)."""
    if value is None:
        return None
    if len(value) > V3_HEAD_SIZE and value[0] == VERSION_3:
        return _decode_v3(value)
    if len(value) == V2_SIZE and value[0] == VERSION_2:
        _, accepted_ms, topic, partition, offset, gap = _V2.unpack(value)
        horizon = None if gap == NO_HORIZON else offset + gap
        return LedgerRecord(accepted_ms, topic, partition, offset, horizon)
    if len(value) == V1_SIZE:
        return LedgerRecord(_V1.unpack(value)[0])
    return None


def _decode_v3(value: bytes) -> LedgerRecord | None:
    _, accepted_ms, topic, partition, first, gap, count = _V3_HEAD.unpack_from(value)
    lengths_at = V3_HEAD_SIZE + 4 * count
    keys_at = lengths_at + count
    if count == 0 or len(value) < keys_at:
        return None
    deltas = struct.unpack_from(f">{count}I", value, V3_HEAD_SIZE)
    lengths = value[lengths_at:keys_at]
    if len(value) != keys_at + sum(lengths):
        return None
    entries = []
    at = keys_at
    for delta, length in zip(deltas, lengths, strict=True):
        end = at + length
        entries.append((first + delta, value[at:end].decode("ascii", "replace")))
        at = end
    horizon = None if gap == NO_HORIZON else first + gap
    return LedgerRecord(accepted_ms, topic, partition, entries[-1][0], horizon, tuple(entries))


def encode_batch(
    accepted_ms: int,
    topic: int,
    partition: int,
    entries: Sequence[tuple[int, str]],
    horizon: int | None,
) -> bytes | None:
    """A format-3 value for ``entries`` (source offset, key), all of one source
    partition, at most ``V3_MAX_ENTRIES``; None when they do not fit the format (a
    key over 255 bytes or not ASCII, offsets 2**32 apart): write them one by one then."""
    count = len(entries)
    if not 0 < count <= V3_MAX_ENTRIES:
        return None
    entries = sorted(entries)
    first = entries[0][0]
    keys = [key for _, key in entries]
    try:
        blob = "".join(keys).encode("ascii")  # ASCII: a key's length in bytes is len(key)
        lengths = bytes(map(len, keys))
        deltas = struct.pack(f">{count}I", *[offset - first for offset, _ in entries])
    except (UnicodeEncodeError, struct.error, ValueError):
        return None
    gap = NO_HORIZON if horizon is None else horizon - first
    if gap < 1 or gap > _MAX_GAP:
        gap = NO_HORIZON
    head = _V3_HEAD.pack(VERSION_3, accepted_ms, topic, partition, first, gap, count)
    return b"".join((head, deltas, lengths, blob))


def batch_key(value: bytes) -> bytes:
    """A format-3 record's Kafka key: unique per content (compaction removes nothing;
    the same batch written again after an abort replaces its own copy only)."""
    return b"b3-" + hashlib.blake2b(value, digest_size=16).digest()


class LedgerEntry(NamedTuple):
    """One accepted signal as any ledger format records it (for joins and tools)."""

    topic: int | None  # ``topic_id`` of the source topic; None: format 1 (unknown)
    partition: int  # source partition; -1 for format 1
    offset: int  # source offset; -1 for format 1
    digest: int  # ``key_digest`` of the idempotency key (the ``LedgerIndex`` digest)
    accepted_ms: int
    horizon: int | None = None  # the record's: None never a stopping point (format 1, backfill)


def entries(key: bytes | None, value: bytes | None) -> list[LedgerEntry]:
    """The signals one ledger record holds, whatever its format ([] for a record that
    is none: unknown value, no key before format 3)."""
    record = decode(value)
    if record is None:
        return []
    if record.entries is None:
        if key is None:
            return []
        return [
            LedgerEntry(
                record.topic, record.partition, record.offset, key_digest(key.decode()),
                record.accepted_ms, record.horizon,
            )
        ]  # fmt: skip
    topic, partition, accepted_ms = record.topic, record.partition, record.accepted_ms
    horizon = record.horizon
    return [
        LedgerEntry(topic, partition, offset, key_digest(k), accepted_ms, horizon)
        for offset, k in record.entries
    ]


def by_source(
    rows: Sequence[tuple[tuple[str, int, int], str]],
) -> Iterator[tuple[tuple[str, int], list[tuple[int, str]]]]:
    """A delivered batch's rows ((topic, partition, offset), key) grouped by source
    partition, in chunks of at most ``V3_MAX_ENTRIES``: what each format-3 record holds."""
    groups: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for (topic, partition, offset), key in rows:
        items = groups.get((topic, partition))
        if items is None:
            items = groups[(topic, partition)] = []
        items.append((offset, key))
    for source, items in groups.items():
        if len(items) <= V3_MAX_ENTRIES:
            yield source, items
            continue
        for at in range(0, len(items), V3_MAX_ENTRIES):
            yield source, items[at : at + V3_MAX_ENTRIES]


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
