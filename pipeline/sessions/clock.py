"""One partition's event-time clock: the watermark that expires sessions.

Event time drives expiry: the watermark is the latest event time the partition has
shown. A partition that goes quiet would then hold its sessions open forever, so
after ``idle_ms`` of wall time without an event the watermark moves on with the wall
clock, from where the events left it::

    watermark = max(event watermark, base + (wall - base_wall - idle_ms))

with (base, base_wall) the event watermark and the wall time at the last event.
This is Bytewax's ``EventClock`` (its watermark advances with the system time since
the last item) with the wait measured from the last *arrival*, not from the last
maximum: a partition that still delivers out-of-order events is not quiet.
Flink's ``withIdleness`` is different: it only stops an idle split from holding back
the *other* splits' watermark; an idle partition's own windows wait until events
move the combined watermark. Here each partition's sessions live in that partition
(producers key by sessionId), so there is no other watermark to wait for: the wall
clock is the only thing that can close them.

A partition that is not quiet but *not read* (paused for backpressure, a Connect
outage, a backlog being caught up) must not look idle: the caller ``hold``s the
clock, or the wall clock would expire sessions whose orders are still unread.
Replays pass no wall time at all: derivation is then a function of the events only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PartitionClock:
    idle_ms: int
    #: Events more than this ahead of the wall clock do not move the watermark further
    #: (a producer's clock set years ahead must not expire every open session).
    max_ahead_ms: int
    watermark: int = -(2**62)
    _base: int = -(2**62)
    _base_wall: int | None = None

    def on_event(self, at: int, wall_ms: int | None) -> int:
        """An event at ``at`` (epoch ms) arrived; the watermark after it."""
        if wall_ms is not None:
            at = min(at, wall_ms + self.max_ahead_ms)
            self._base_wall = wall_ms
        if at > self.watermark:
            self.watermark = at
        self._base = self.watermark
        return self.watermark

    def hold(self, wall_ms: int) -> None:
        """The partition is busy or paused, not quiet: restart the idle wait."""
        self._base = self.watermark
        self._base_wall = wall_ms

    def on_wall(self, wall_ms: int) -> int:
        """The wall clock reads ``wall_ms``; the watermark after it."""
        if self._base_wall is None:  # nothing seen since start: start waiting now
            self._base_wall = wall_ms
            self._base = self.watermark
            return self.watermark
        quiet = wall_ms - self._base_wall - self.idle_ms
        if quiet > 0 and self._base + quiet > self.watermark:
            self.watermark = self._base + quiet
        return self.watermark
