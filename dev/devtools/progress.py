"""A live progress line: redrawn in place on a terminal, a line now and then elsewhere."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from prometheus_client import CollectorRegistry

from pipeline.ops.metrics import PREFIX
from pipeline.signals.outcomes import Reason


@dataclass(frozen=True, slots=True)
class Counts:
    produced: int
    planned: int
    delivered: int
    dead_lettered: int


def render(counts: Counts) -> str:
    return (
        f"produced {counts.produced:,}/{counts.planned:,}   "
        f"delivered {counts.delivered:,}   dead-lettered {counts.dead_lettered:,}"
    )


def pipeline_counts(registry: CollectorRegistry | None) -> tuple[int, int]:
    """(delivered, dead-lettered) so far, from a consumer's metrics registry."""
    if registry is None:
        return 0, 0
    delivered = registry.get_sample_value(f"{PREFIX}_events_delivered_total") or 0
    dead = sum(
        registry.get_sample_value(f"{PREFIX}_events_dead_lettered_total", {"reason": str(r)}) or 0
        for r in Reason
    )
    return int(delivered), int(dead)


class ProgressLine:
    """Shows ``read()`` every ``interval_s`` (terminal) or ``plain_interval_s`` (a file
    or a pipe: whole lines, so a log stays readable) until ``stop()``."""

    def __init__(
        self,
        out: TextIO,
        read: Callable[[], Counts],
        *,
        interval_s: float = 0.25,
        plain_interval_s: float = 2.0,
    ) -> None:
        self._out = out
        self._read = read
        self._tty = out.isatty()
        self._interval_s = interval_s if self._tty else plain_interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-progress", daemon=True)
        self._last = ""

    def __enter__(self) -> ProgressLine:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _show(self, final: bool = False) -> None:
        line = render(self._read())
        if self._tty:
            padding = " " * max(0, len(self._last) - len(line))
            self._out.write(f"\r{line}{padding}" + ("\n" if final else ""))
        elif line != self._last:
            self._out.write(line + "\n")
        self._out.flush()
        self._last = line

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self._show()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._show(final=True)
