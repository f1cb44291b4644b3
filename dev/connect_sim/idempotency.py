"""The Idempotency-Key store, as the IETF httpapi idempotency-key draft describes it.

A key first seen is reserved while its request is processed; a repeat meanwhile is
a conflict (409). Once answered, a repeat with the same payload fingerprint gets the
stored response and a different payload is a misuse (422). Keys expire after ttl_s;
beyond max_keys the oldest go first, so memory stays bounded at any request rate.
Time is passed in, so the rules are plain functions of their inputs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    NEW = "new"  # process it, then complete() or abandon()
    IN_PROGRESS = "in_progress"  # 409
    MISMATCH = "mismatch"  # 422
    REPLAY = "replay"  # answer with the stored response


@dataclass
class Entry:
    fingerprint: str
    expires: float
    status: int | None = None  # None while the first request is processed
    body: bytes = b""


class IdempotencyStore:
    def __init__(self, ttl_s: float, max_keys: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.entries: dict[str, Entry] = {}
        self._next_prune = 0.0

    def begin(self, key: str, fingerprint: str, now: float) -> tuple[Verdict, Entry | None]:
        self._prune(now)
        entry = self.entries.get(key)
        if entry is not None and entry.expires > now:
            if entry.status is None:
                return Verdict.IN_PROGRESS, entry
            if entry.fingerprint != fingerprint:
                return Verdict.MISMATCH, entry
            return Verdict.REPLAY, entry
        self.entries.pop(key, None)  # an expired entry: the new one goes last in order
        self.entries[key] = Entry(fingerprint, now + self.ttl_s)
        if len(self.entries) > self.max_keys:
            del self.entries[next(iter(self.entries))]  # the oldest (insertion order)
        return Verdict.NEW, None

    def complete(self, key: str, status: int, body: bytes) -> None:
        entry = self.entries.get(key)
        if entry is not None:
            entry.status, entry.body = status, body

    def abandon(self, key: str) -> None:
        """The request died before an answer: a retry may process it afresh."""
        entry = self.entries.get(key)
        if entry is not None and entry.status is None:
            del self.entries[key]

    def _prune(self, now: float) -> None:
        # Expired keys go at most once a second (or a tenth of the TTL), in one sweep.
        if now < self._next_prune:
            return
        self._next_prune = now + min(1.0, self.ttl_s / 10)
        expired = [k for k, e in self.entries.items() if e.expires <= now and e.status is not None]
        for key in expired:
            del self.entries[key]
