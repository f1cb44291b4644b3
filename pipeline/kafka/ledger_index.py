"""The in-memory ledger index: which keys Connect accepted, in ~24 bytes a key.

Filled from the ledger topic at assignment (the tail that can be re-read) and as
Connect accepts signals. A loader may fill it from another thread while the poll
loop reads it: ``add`` and ``expire`` hold a lock; membership reads a bucket with one
C call (atomic under the GIL).
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

import structlog

log = structlog.get_logger("pipeline.kafka.ledger")

#: Digests are 64-bit: the in-process ``hash()`` of the key, as an unsigned value.
_DIGEST_MASK: Final = (1 << 64) - 1
#: Keys per hash bucket when the index is full (a bucket is scanned in C, ~0.3 µs).
_BUCKET_KEYS: Final = 16


def key_digest(key: str) -> int:
    """A key's 64-bit digest: ``hash()`` of a str is SipHash-1-3 under a random per-process
    secret (cached on the str), so colliding keys cannot be crafted from outside.

    The index is rebuilt from the ledger topic in each process, so a per-process digest
    is enough. Two keys sharing a digest make the newer one look delivered: with n keys
    held, the chance for one lookup is n / 2**64 (about 5e-14 at 1,000,000 keys).
    """
    return hash(key) & _DIGEST_MASK


class LedgerIndex:
    """Keys accepted within the retention window, at most ``max_keys`` of them.

    Compact, because a backlog fills it to ``max_keys``: a key is held as a 64-bit
    digest in two flat arrays, never as a Python object (a str key and its dict slot
    cost ~120 bytes; this costs ~24):

    - membership: ``max_keys / 16`` buckets (``array('Q')``), chosen by the digest's
      low bits, each scanned in C;
    - age: chunks of digests in insertion order, one per minute of acceptance (about
      time order: the ledger is read in offset order and appended as Connect accepts).
      Expiry and eviction drop whole chunks, or the front of the oldest one.

    A key added again is held twice (its older copy goes with its older chunk), so
    it stays a member as long as its newest copy; ``len`` counts copies.
    """

    __slots__ = (
        "_buckets",
        "_chunks",
        "_clock",
        "_count",
        "_lock",
        "_mask",
        "evicted",
        "expired",
        "max_keys",
        "retention_ms",
    )

    def __init__(
        self,
        max_keys: int,
        retention_ms: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_keys = max_keys
        self.retention_ms = retention_ms
        self._clock = clock
        buckets = 1 << max(0, (max_keys // _BUCKET_KEYS).bit_length())
        self._mask = buckets - 1
        self._buckets: list[array[int] | None] = [None] * buckets  # created on first use
        self._chunks: deque[tuple[int, array[int]]] = deque()  # (minute, digests), oldest first
        self._count = 0
        self._lock = threading.Lock()  # a loader thread adds beside the poll loop
        self.evicted = 0  # dropped to stay under max_keys
        self.expired = 0  # dropped for being older than the retention window

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.has(key)

    def has(self, key: str) -> bool:
        """``key in index`` for the record path (once a signal): a plain method call
        costs less than ``in``'s dispatch to a Python ``__contains__``."""
        digest = hash(key) & _DIGEST_MASK  # key_digest, inlined
        bucket = self._buckets[digest & self._mask]
        return bucket is not None and digest in bucket

    def cutoff_ms(self) -> int:
        return int(self._clock() * 1000) - self.retention_ms

    def add(self, key: str, accepted_ms: int) -> bool:
        """Remember a key; False when it is already older than the retention window."""
        if accepted_ms < self.cutoff_ms():
            return False
        with self._lock:
            self._add(key, accepted_ms)
        return True

    def add_many(self, keys: Iterable[str], accepted_ms: int) -> bool:
        """``add`` for the keys of one delivered batch (one acceptance time): one clock
        read and one lock for the batch, not one per key."""
        if accepted_ms < self.cutoff_ms():
            return False
        self.add_digests([hash(key) & _DIGEST_MASK for key in keys], accepted_ms)
        return True

    def add_digests(self, digests: Iterable[int], accepted_ms: int) -> int:
        """``add_many`` for digests already computed (``key_digest``; a replay's join):
        how many were added (0 when older than the retention window)."""
        if accepted_ms < self.cutoff_ms():
            return 0
        minute = accepted_ms // 60_000
        buckets, mask = self._buckets, self._mask
        with self._lock:
            chunks = self._chunks
            if not chunks or minute > chunks[-1][0]:
                chunks.append((minute, array("Q")))
            chunk = chunks[-1][1]
            if not isinstance(digests, list):
                digests = list(digests)
            chunk.extend(digests)  # in C
            for digest in digests:
                bucket = buckets[digest & mask]
                if bucket is None:
                    bucket = buckets[digest & mask] = array("Q")
                bucket.append(digest)
            added = len(digests)
            self._count += added
            if self._count > self.max_keys:
                self._evict(self._count - self.max_keys + self.max_keys // 100)
        return added

    def _add(self, key: str, accepted_ms: int) -> None:
        minute = accepted_ms // 60_000
        digest = key_digest(key)
        slot = digest & self._mask
        bucket = self._buckets[slot]
        if bucket is None:
            bucket = self._buckets[slot] = array("Q")
        bucket.append(digest)
        # An older minute (partitions read out of step) joins the newest chunk: it then
        # expires a little late, never early.
        if not self._chunks or minute > self._chunks[-1][0]:
            self._chunks.append((minute, array("Q")))
        self._chunks[-1][1].append(digest)
        self._count += 1
        if self._count > self.max_keys:
            # 1% at a time: fewer, larger cuts of the oldest chunk
            self._evict(self._count - self.max_keys + self.max_keys // 100)

    def _drop_oldest(self, count: int) -> int:
        """Forget up to ``count`` of the oldest copies; returns how many."""
        dropped = 0
        while dropped < count and self._chunks:
            _, digests = self._chunks[0]
            take = min(count - dropped, len(digests))
            for digest in digests[:take]:
                bucket = self._buckets[digest & self._mask]
                assert bucket is not None
                bucket.remove(digest)  # the first copy in the bucket is the oldest
            if take == len(digests):
                self._chunks.popleft()
            else:
                del digests[:take]
            dropped += take
        self._count -= dropped
        return dropped

    def _evict(self, count: int) -> None:
        first = self.evicted == 0
        count = self._drop_oldest(count)
        self.evicted += count
        if first or self.evicted % 100_000 < count:
            log.warning(
                "ledger over PIPELINE_LEDGER_MAX_KEYS: oldest keys evicted",
                evicted=self.evicted,
                max_keys=self.max_keys,
            )

    def expire(self) -> int:
        """Drop keys older than the retention window (whole chunks, oldest first)."""
        cutoff_minute = self.cutoff_ms() // 60_000
        with self._lock:
            old = 0
            for minute, digests in self._chunks:
                if minute >= cutoff_minute:
                    break
                old += len(digests)
            if old:
                self.expired += self._drop_oldest(old)
        return old
