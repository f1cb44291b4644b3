"""Adaptive request concurrency: how many calls may be in flight, learnt from answers.

Connect publishes no rate limits, so the limit adapts, as Vector's adaptive request
concurrency does (AIMD, additive increase, multiplicative decrease), between 1 and the
configured maximum. Answers are judged a window at a time (as many answers as the
limit: about one round of calls):

- a back-pressure answer in the window (429, 503, a GraphQL THROTTLED or RATE_LIMITED,
  a timeout or 504): the limit halves;
- the window's mean latency rose clearly above the moving average of the past windows
  (by ``deviation_scale`` moving deviations and at least ``min_rise`` of it): halves;
- otherwise, if the limit was reached during the window (it was what held calls back),
  it grows by one.

Pure: no clock and no I/O; the answers and their latencies are handed in. Thread-safe:
the delivery threads report answers while the loop thread reads ``limit``.
"""

from __future__ import annotations

import threading
from typing import Final

#: weight of the newest window in the moving average of latency (Vector's default)
EWMA_ALPHA: Final = 0.4
#: how many moving deviations above the average count as a rise (Vector's default)
DEVIATION_SCALE: Final = 2.5
#: a rise smaller than this share of the average is noise, whatever the deviation
MIN_RISE: Final = 0.5


class AdaptiveConcurrency:
    """The in-flight limit, from 1 to ``maximum``; starts at ``initial`` (the maximum)."""

    def __init__(
        self,
        maximum: int,
        *,
        initial: int | None = None,
        ewma_alpha: float = EWMA_ALPHA,
        deviation_scale: float = DEVIATION_SCALE,
        min_rise: float = MIN_RISE,
    ) -> None:
        if maximum < 1:
            raise ValueError("maximum must be at least 1")
        self.maximum = maximum
        self.limit = max(1, min(maximum, initial if initial is not None else maximum))
        self._alpha = ewma_alpha
        self._scale = deviation_scale
        self._min_rise = min_rise
        self._lock = threading.Lock()
        self.past_latency_s: float | None = None  # moving average of window means
        self._past_deviation_s = 0.0
        self._answers = 0
        self._latency_sum = 0.0
        self._timed = 0  # answers with a latency in the mean (not back-pressure)
        self._pressed = False
        self._reached = False

    def reached(self) -> None:
        """The caller filled every slot: the limit is what holds calls back."""
        self._reached = True

    def observe(self, backpressure: bool, latency_s: float) -> int:
        """One answer; the limit after it (changed only at the end of a window)."""
        with self._lock:
            self._answers += 1
            if backpressure:
                self._pressed = True
            else:
                self._latency_sum += latency_s
                self._timed += 1
            if self._answers >= self.limit:
                self._decide()
            return self.limit

    def _decide(self) -> None:
        mean = self._latency_sum / self._timed if self._timed else None
        past = self.past_latency_s
        rising = (
            mean is not None
            and past is not None
            and mean > past + max(self._scale * self._past_deviation_s, self._min_rise * past)
        )
        if self._pressed or rising:
            self.limit = max(1, self.limit // 2)
        elif self._reached and self.limit < self.maximum:
            self.limit += 1
        if mean is not None:
            if past is None:
                self.past_latency_s = mean
            else:
                deviation = abs(mean - past)
                self._past_deviation_s += self._alpha * (deviation - self._past_deviation_s)
                self.past_latency_s = past + self._alpha * (mean - past)
        self._answers = 0
        self._latency_sum = 0.0
        self._timed = 0
        self._pressed = False
        self._reached = False
