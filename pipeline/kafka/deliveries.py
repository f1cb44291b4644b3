"""Batches out to Connect on a pool of threads, their reports back through a queue."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from pipeline.connect.client import Batch, DeliveryReport
from pipeline.connect.concurrency import AdaptiveConcurrency

Deliver = Callable[[Batch], DeliveryReport]


class Deliveries:
    """At most ``max_in_flight`` batches out at once, or fewer while ``adaptive`` says so
    (its limit moves between 1 and ``max_in_flight``); only the loop thread calls this."""

    def __init__(
        self,
        deliver: Deliver,
        max_in_flight: int,
        adaptive: AdaptiveConcurrency | None = None,
    ) -> None:
        self._deliver = deliver
        self.max_in_flight = max_in_flight
        self.adaptive = adaptive
        self.in_flight = 0
        self._reports: queue.SimpleQueue[DeliveryReport] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="deliver")

    @property
    def limit(self) -> int:
        """Calls allowed in flight now."""
        return self.adaptive.limit if self.adaptive is not None else self.max_in_flight

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.limit

    def send(self, batch: Batch) -> None:
        self.in_flight += 1
        if self.adaptive is not None and self.in_flight >= self.adaptive.limit:
            self.adaptive.reached()
        future = self._pool.submit(self._deliver, batch)
        future.add_done_callback(self._done)

    def _done(self, future: Future[DeliveryReport]) -> None:
        self._reports.put(future.result())

    def reports(self, block_s: float = 0.0) -> Iterator[DeliveryReport]:
        """The reports that arrived (waiting up to ``block_s`` for the first)."""
        deadline = time.monotonic() + block_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    report = self._reports.get(timeout=remaining)
                else:
                    report = self._reports.get_nowait()
            except queue.Empty:
                return
            self.in_flight -= 1
            deadline = 0.0
            yield report

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
