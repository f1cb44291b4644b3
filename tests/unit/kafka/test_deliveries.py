"""Deliveries with a stand-in deliver function: slots, reports, in-flight count."""

from __future__ import annotations

import threading

from pipeline.connect.client import Batch, DeliveryReport
from pipeline.kafka.deliveries import Deliveries


def test_reports_come_back_and_free_their_slot():
    release = threading.Event()

    def deliver(batch: Batch) -> DeliveryReport:
        release.wait(5)
        return DeliveryReport(batch, calls=1)

    deliveries = Deliveries(deliver, max_in_flight=2)
    try:
        for n in range(2):
            deliveries.send(Batch([f"k{n}"], [b"{}"], [n]))
        assert deliveries.in_flight == 2 and not deliveries.has_room
        assert list(deliveries.reports()) == []  # nothing back yet, nothing waited for
        release.set()
        reports = list(deliveries.reports(block_s=5))
        while len(reports) < 2:
            reports += list(deliveries.reports(block_s=5))
        assert sorted(r.batch.refs[0] for r in reports) == [0, 1]
        assert deliveries.in_flight == 0 and deliveries.has_room
    finally:
        deliveries.close()
