"""Where the consumer thread's time goes, per accepted signal, on a real backlog.

    python -m benchmarks breakdown [--events 60000]

The consumer runs in this process (``SignalConsumer``, production settings) against
the embedded broker and the simulator; its methods and the processor's stages are
wrapped with a wall-clock accumulator (two ``perf_counter`` calls each). Times are
wall time on the consumer thread, so they include waiting for the GIL while the
delivery threads run, and preemption on a busy machine: read them as shares. Nested
rows are included in their callers (``_handle`` holds ``process`` and ``_admission``;
``process`` holds ``lane``, then, for what the lane is not sure of, ``decode``,
``validate``, ``map``; ``_admission`` holds ``encode``). Logging is configured as
``connect-pipeline run`` does (JSON, INFO: one line per dead letter), written to a
file in the benchmark's work directory.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.stack import API_KEY, APP_KEY, Stack

#: ``_admission`` (ledger check, JSON fragment, in-flight claim) is the record path's,
#: once per signal, and derived signals'; ``_admit`` and ``_add_to_batch`` only serve
#: derived signals and fragments too large to send (the record path batches a consumed
#: batch's signals at once: ``batcher.add_many``).
CONSUMER_METHODS = (
    "_step",
    "_poll",
    "_handle",
    "_admission",
    "_derived",
    "_dead_letter",
    "_collect_reports",
    "_settle",
    "_delivered",
    "_finish",
    "_dispatch",
    "_commit",
)


def _timed(fn: Callable[..., Any], label: str, totals: dict[str, float]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] = totals.get(label, 0.0) + time.perf_counter() - start

    return wrapper


class _Timed:
    """Proxy of a librdkafka client with some of its methods timed."""

    def __init__(self, inner: Any, names: tuple[str, ...], prefix: str, totals: Any) -> None:
        self._inner = inner
        for name in names:
            setattr(self, name, _timed(getattr(inner, name), f"{prefix}.{name}", totals))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def run_breakdown(stack: Stack, events: int) -> tuple[float, int, dict[str, float]]:
    """(seconds, signals, label -> seconds) from the first to the last acceptance."""
    import pipeline.kafka.consumer as consumer_module
    import pipeline.signals.processor as processor_module
    from pipeline.config import Settings
    from pipeline.kafka.consumer import SignalConsumer
    from pipeline.kafka.runner import build_processor
    from pipeline.ops.logs import configure_logging

    backlog = stack.produce_backlog(events)
    stack.sim.reset()
    group = f"breakdown-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka_bootstrap_servers=stack.bootstrap,
        topics=[backlog.topic],
        dlq_topic=f"{backlog.topic}-dlq",
        group_id=group,
        transactional_id=group,
        schema_registry_url=stack.registry.url,
        default_app_key=APP_KEY,
        connect_api_key=API_KEY,
        connect_url=stack.sim.graphql_url,
        session_timeout_ms=6000,
        http_port=0,
    )
    log_file = (stack.workdir / f"{group}.log").open("w")
    configure_logging(settings, log_file)
    totals: dict[str, float] = {}
    consumer = SignalConsumer(settings, build_processor(settings))
    for name in CONSUMER_METHODS:
        if hasattr(consumer, name):  # the core's methods move; time what exists
            setattr(consumer, name, _timed(getattr(consumer, name), name, totals))
    processor: Any = consumer._processor
    processor.process = _timed(processor.process, "process", totals)
    if processor._lane is not None:  # the codec's lane: bytes to signal in one pass
        processor._lane = _timed(processor._lane, "process > lane", totals)
    processor._decoder.decode = _timed(processor._decoder.decode, "process > decode", totals)
    # the processor calls these by module-level name: wrap them there, put back after
    originals = {name: getattr(processor_module, name) for name in ("validate_event", "map_event")}
    for name, label in (("validate_event", "validate"), ("map_event", "map")):
        setattr(processor_module, name, _timed(originals[name], f"process > {label}", totals))
    batcher: Any = consumer._batcher
    batcher.add_many = _timed(batcher.add_many, "_handle > batcher.add_many", totals)
    encode = getattr(consumer_module, "encode_signal")  # noqa: B009 (imported, not exported)
    setattr(consumer_module, "encode_signal", _timed(encode, "_admission > encode", totals))  # noqa: B010
    consumer._consumer = _Timed(consumer._consumer, ("consume",), "consumer", totals)  # type: ignore[assignment]
    consumer._producer = _Timed(consumer._producer, ("poll", "produce"), "producer", totals)  # type: ignore[assignment]
    window: dict[str, Any] = {}

    def watch() -> None:
        while stack.sim.stats()["accepted"] < 1:
            time.sleep(0.02)
        totals.clear()
        start, first = time.perf_counter(), stack.sim.stats()["accepted"]
        while stack.sim.stats()["accepted"] < backlog.valid:
            time.sleep(0.02)
        window.update(
            seconds=time.perf_counter() - start,
            signals=stack.sim.stats()["accepted"] - first,
            totals=dict(totals),
        )
        consumer.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        consumer.run()
    finally:
        for name, original in originals.items():
            setattr(processor_module, name, original)
        setattr(consumer_module, "encode_signal", encode)  # noqa: B010
        log_file.close()
    watcher.join(5)
    return window["seconds"], window["signals"], window["totals"]


def print_breakdown(seconds: float, signals: int, totals: dict[str, float]) -> None:
    print(f"consumer thread, {signals:,} signals in {seconds:.2f} s ({signals / seconds:,.0f}/s)")
    print()
    print("| where | share of the thread's wall time | µs per accepted signal |")
    print("|---|---:|---:|")
    for label, spent in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {spent / seconds:.0%} | {spent * 1e6 / signals:.1f} |")
