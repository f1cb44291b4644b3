"""Tracing wired in: ``connect-pipeline run`` with PIPELINE_TRACING=true, the embedded
broker, a real HTTP Connect stand-in and a stand-in OTLP collector. The createSignals
span links to its record's producer span, the dead-letter span is a child of its
record's; the same run shows the committed-offset lag and the ledger's evictions."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer
from devtools.clickstream import clickstream
from devtools.producer import EventEncoder

from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.kafka import runner
from tests.integration.connect_stub import connect_stub
from tests.integration.consumer_harness import new_topics, settings_for
from tests.ops.test_tracing import _spans, collector  # noqa: F401  (fixture)

SIGNAL_TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"
SIGNAL_SPAN = "10f067aa0ba902b7"
BROKEN_TRACE = "1af7651916cd43dd8448eb211c80319c"
BROKEN_SPAN = "c7ad6b7169203331"


def _traceparent(trace: str, span: str) -> bytes:
    return f"00-{trace}-{span}-01".encode()


def test_run_with_tracing_continues_the_producers_traces(kafka_bootstrap, collector, monkeypatch):  # noqa: F811
    topic, dlq = new_topics(kafka_bootstrap, partitions=1)
    event = next(e for e in clickstream(20, seed=3, invalid_ratio=0, v1_ratio=0))
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(
        topic,
        key=b"s1",
        value=EventEncoder(DEFAULT_AVRO_DIR).encode(event),
        headers=[("traceparent", _traceparent(SIGNAL_TRACE, SIGNAL_SPAN))],
    )
    producer.produce(
        topic,
        key=b"s2",
        value=b"\x07not an event",  # undecodable: dead-lettered
        headers=[("traceparent", _traceparent(BROKEN_TRACE, BROKEN_SPAN))],
    )
    assert producer.flush(30) == 0
    consumers: list[Any] = []  # the consumer run() builds, for its metrics afterwards
    committed_lags: list[dict[str, float]] = []  # the gauge after each statistics callback

    def start_ops_server(settings: Any, consumer: Any) -> None:
        consumers.append(consumer)
        metrics = consumer.metrics
        on_statistics = metrics.on_statistics

        def observed(stats: dict[str, Any]) -> None:
            on_statistics(stats)
            (gauge,) = metrics.committed_lag.collect()
            committed_lags.append({s.labels["partition"]: s.value for s in gauge.samples})

        metrics.on_statistics = observed

    monkeypatch.setattr(runner, "start_ops_server", start_ops_server)
    with connect_stub() as connect:
        settings = settings_for(
            kafka_bootstrap,
            topic,
            dlq,
            connect.url,
            tracing=True,
            kafka_config={"statistics.interval.ms": "100"},
        )
        summary = runner.run(settings, stop_after_idle_s=1.5)  # shuts tracing down: exported
    assert summary.dead_lettered_total == 1 and len(connect.accepted) == 1

    spans = [span for _, span in _spans(collector.bodies)]
    calls = [s for s in spans if s.name == "createSignals"]
    assert calls, [s.name for s in spans]
    linked = {(link.trace_id.hex(), link.span_id.hex()) for s in calls for link in s.links}
    assert linked == {(SIGNAL_TRACE, SIGNAL_SPAN)}
    outcomes = {a.key: a.value for a in calls[-1].attributes}
    assert outcomes["connect.signals.outcome"].string_value == "ok"
    assert outcomes["connect.signals.accepted"].int_value == 1
    (dead,) = [s for s in spans if s.name == "dead-letter"]
    assert (dead.trace_id.hex(), dead.parent_span_id.hex()) == (BROKEN_TRACE, BROKEN_SPAN)

    # read to the end and committed: a restart would read nothing again
    assert [lags for lags in committed_lags if lags][-1] == {"0": 0}
    (consumer,) = consumers
    page = consumer.metrics.exposition().decode()
    assert "connect_signals_ledger_evicted_total 0.0" in page
    assert "connect_signals_dead_letter_write_failures_total 0.0" in page
