"""The session stage's metrics, read from its counters when Prometheus scrapes.

Nothing is incremented on the data path: the stage keeps plain integers, and this
collector turns them into counters and gauges at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.ops.metrics import PREFIX
from pipeline.sessions.stage import SessionStage

NAME: Final = f"{PREFIX}_sessions"


class SessionCollector(Collector):
    def __init__(self, stage: SessionStage) -> None:
        self._stage = stage

    def collect(self) -> Iterator[Metric]:
        stage = self._stage
        counters = stage.counters()
        yield GaugeMetricFamily(
            f"{NAME}_open", "Open sessions of the assigned partitions.", stage.open_sessions
        )
        simple = (
            ("opened", "Sessions opened.", counters.opened),
            ("closed", "Sessions closed (expired or closed early at the cap).", counters.closed),
            (
                "evicted",
                "Sessions closed early: PIPELINE_SESSION_MAX_OPEN reached on their partition.",
                counters.evicted,
            ),
            (
                "late_events",
                "Events later than PIPELINE_SESSION_GRACE_S: counted, not applied.",
                counters.late,
            ),
            (
                "reused_events",
                "Events of a session id whose session had expired: counted, not applied.",
                counters.reused,
            ),
            (
                "unkeyed_events",
                "Events whose Kafka key is not their sessionId (sessions may be split).",
                stage.unkeyed,
            ),
            (
                "split_events",
                "Events of a session open on another partition: derivation may be wrong.",
                stage.split,
            ),
        )
        for name, documentation, value in simple:
            yield CounterMetricFamily(f"{NAME}_{name}", documentation, value)
        derived = CounterMetricFamily(
            f"{NAME}_derived_signals", "Abandonment signals derived, by type.", labels=["type"]
        )
        for kind in ("browseAbandonment", "cartAbandonment"):
            derived.add_metric([kind], counters.derived.get(kind, 0))
        yield derived


def register(registry: CollectorRegistry, stage: SessionStage) -> None:
    registry.register(SessionCollector(stage))
