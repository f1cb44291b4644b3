"""The shop-mix peer benchmark waits for a signal count it computes before the run
(``benchmarks.shop_mix.expected_signals``): the real consumer must deliver exactly
that many, the derived ones included, and all of it before its partitions go quiet.
A count too high would make the benchmark wait ~30 min for the wall clock; too low,
stop it before the consumer is done."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from devtools.stack import loopback_http

from benchmarks.shop_mix import expected_signals, produce, shop_stream
from tests.integration.consumer_harness import (
    BackgroundConsumer,
    new_topics,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration


class Sink:
    """Connect on 127.0.0.1: counts accepted signals by idempotency key."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.lock = threading.Lock()

    def total(self) -> int:
        with self.lock:
            return sum(self.accepted.values())


@contextmanager
def sink() -> Iterator[tuple[Sink, str]]:
    counts = Sink()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            header = self.headers.get("signal-idempotency-keys", "")
            keys = [k.strip().strip('"') for k in header.split(",") if k.strip()]
            with counts.lock:
                counts.accepted.update(keys)
            raw = json.dumps({"data": {"createSignals": {"accepted": len(keys)}}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with loopback_http(Handler) as base:
        yield counts, f"{base}/graphql"


def test_the_consumer_delivers_exactly_the_expected_count_derived_ones_included(
    kafka_bootstrap: str,
) -> None:
    # pace 10: 3,000 events span ~4 h of event time, so most sessions close in the
    # stream with the default 30-minute gap and 60 s grace
    stream = shop_stream(3_000, pace=10.0)
    topic, dlq = new_topics(kafka_bootstrap, partitions=6)
    produce(kafka_bootstrap, topic, stream)
    with sink() as (counts, url):
        settings = settings_for(kafka_bootstrap, topic, dlq, url, derive_abandonment="both")
        want = expected_signals(stream, settings)
        assert want.source == 3_000
        assert sum(want.derived.values()) > 30 and want.open_at_end > 0
        consumer = BackgroundConsumer(settings).start()
        try:
            wait_for(lambda: counts.total() >= want.total, 60, f"{want.total} signals")
        finally:
            summary = consumer.stop()
    assert summary.consumed == 3_000  # the count was not reached early
    assert counts.total() == want.total  # nor passed
    assert max(counts.accepted.values()) == 1
    derived = Counter(key.split("-", 1)[0] for key in counts.accepted if "Abandonment-" in key)
    assert derived == want.derived
