"""The shop-mix peer benchmark waits for a signal count it computes before the run
(``benchmarks.shop_mix.expected_signals``): the real consumer must deliver exactly
that many, the derived ones included, and all of it before its partitions go quiet.
A count too high would make the benchmark wait ~30 min for the wall clock; too low,
stop it before the consumer is done."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.shop_mix import expected_signals, produce, shop_stream
from tests.integration.connect_stub import connect_stub
from tests.integration.consumer_harness import (
    BackgroundConsumer,
    new_topics,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_the_consumer_delivers_exactly_the_expected_count_derived_ones_included(
    kafka_bootstrap: str,
) -> None:
    # pace 10: 3,000 events span ~4 h of event time, so most sessions close in the
    # stream with the default 30-minute gap and 60 s grace
    stream = shop_stream(3_000, pace=10.0)
    topic, dlq = new_topics(kafka_bootstrap, partitions=6)
    produce(kafka_bootstrap, topic, stream)
    with connect_stub() as connect:
        settings = settings_for(kafka_bootstrap, topic, dlq, connect.url, derive_abandonment="both")
        want = expected_signals(stream, settings)
        assert want.source == 3_000
        assert sum(want.derived.values()) > 30 and want.open_at_end > 0
        consumer = BackgroundConsumer(settings).start()
        try:
            wait_for(lambda: connect.accepted.total() >= want.total, 60, f"{want.total} signals")
        finally:
            summary = consumer.stop()
    assert summary.consumed == 3_000  # the count was not reached early
    assert connect.accepted.total() == want.total  # nor passed
    assert connect.duplicates == 0
    derived = Counter(key.split("-", 1)[0] for key in connect.accepted if "Abandonment-" in key)
    assert derived == want.derived
