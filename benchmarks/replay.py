"""Replay throughput with half the range already delivered, and the ledger's cost per key.

    python -m benchmarks.replay [--events 500000] [--partitions 4] [--keys 1000000]

(1) Memory: ``--keys`` idempotency keys added to a ``LedgerIndex`` (the in-memory
    ledger), measured with tracemalloc (the key strings included, as the index owns
    them), for the clickstream's event ids and for 36-character UUIDs. On the broker a
    ledger record is its key, an 8-byte value and the record framing.
(2) Throughput: ``--events`` events produced round-robin to the partitions, the ledger
    topic pre-filled with the keys of every other event (as if a first run had
    delivered them), then ``connect-pipeline replay --from-offset 0`` in this process:
    the ledger load, then the replay (decode, validate, map, skip or send) against the
    Connect simulator. Prints events/s; sent must equal skipped.

Real components: the embedded Tansu broker (or ``PIPELINE_KAFKA_BOOTSTRAP_SERVERS``) and
the simulator over HTTP. Figures only; never a test.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
import tracemalloc
import uuid
from contextlib import ExitStack

from confluent_kafka import Producer
from devtools.clickstream import clickstream
from devtools.producer import EventEncoder
from devtools.stack import create_topics, kafka, simulator

from pipeline.config import DEFAULT_AVRO_DIR, Settings
from pipeline.kafka.ledger import LedgerIndex, LedgerLoader, ledger_value
from pipeline.kafka.replay import Range, bounded_settings, resolve_bounds, run_bounded
from pipeline.signals.mapping import MappingOptions, map_event
from pipeline.signals.outcomes import Rejection
from pipeline.signals.validation import validate_event

API_KEY = "bench-api-key"
APP_KEY = "bench-app-key"
WEEK_MS = 7 * 24 * 3_600_000


def bytes_per_key(keys: list[str]) -> float:
    """tracemalloc bytes per key of an index holding these keys (strings included)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = LedgerIndex(max_keys=len(keys) + 1, retention_ms=WEEK_MS)
    now = int(time.time() * 1000)
    for key in keys:
        index.add("".join(key), now)  # a fresh string, as a decoded record's would be
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(index) == len(keys)
    return (after - before) / len(keys)


def record_bytes(key: str) -> int:
    """A ledger record's size in a v2 record batch (no headers), before compression."""

    def varint(n: int) -> int:
        n = (n << 1) ^ (n >> 63)  # zigzag
        size = 1
        while n >= 0x80:
            n >>= 7
            size += 1
        return size

    body = 1 + varint(0) + varint(0) + varint(len(key)) + len(key) + varint(8) + 8 + varint(0)
    return varint(body) + body


def prepare(bootstrap: str, topic: str, ledger: str, events: int, partitions: int) -> int:
    """Produce the events round-robin; pre-fill the ledger with every other key."""
    encoder = EventEncoder(DEFAULT_AVRO_DIR)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    options = MappingOptions(APP_KEY)
    now = int(time.time() * 1000)
    in_ledger = 0
    generated = list(clickstream(events, seed=97, invalid_ratio=0))
    for i, event in enumerate(generated[: events - partitions]):
        partition = i % partitions
        _produce(producer, topic, partition, None, encoder.encode(event))
        if i % 2 == 0:
            valid = validate_event(event.signal_type, event.record)
            assert not isinstance(valid, Rejection)
            mapped = map_event(valid, options)
            assert not isinstance(mapped, Rejection)
            _produce(producer, ledger, partition, mapped.idempotency_key.encode(), now)
            in_ledger += 1
        if i % 5000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    # The last event of each partition alone in its batch: exact end offsets anywhere.
    for partition, event in enumerate(generated[events - partitions :]):
        _produce(producer, topic, partition, None, encoder.encode(event))
        assert producer.flush(30) == 0
    return in_ledger


def _produce(
    producer: Producer, topic: str, partition: int, key: bytes | None, value: bytes | int
) -> None:
    payload = ledger_value(value) if isinstance(value, int) else value
    while True:
        try:
            producer.produce(topic, value=payload, key=key, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )

    event_ids = [e.event_id for e in clickstream(min(args.keys, 50_000), seed=5)]
    ids = [f"{event_ids[i % len(event_ids)]}-{i:07d}" for i in range(args.keys)]
    uuids = [str(uuid.uuid4()) for _ in range(args.keys)]
    print(f"ledger memory, {args.keys:,} keys:")
    for name, keys in (("clickstream event ids", ids), ("UUIDs", uuids)):
        print(
            f"  {name} ({len(keys[0])} chars): {bytes_per_key(keys):.0f} B/key in memory, "
            f"{record_bytes(keys[0])} B/record on the broker (+ batch framing)"
        )
    del ids, uuids

    with ExitStack() as stack:
        bootstrap = stack.enter_context(kafka()).bootstrap_servers
        sim = stack.enter_context(simulator(API_KEY, [APP_KEY]))
        suffix = uuid.uuid4().hex[:8]
        topic, group = f"bench-replay-{suffix}", f"bench-{suffix}"
        ledger = f"{group}-ledger"
        create_topics(
            bootstrap, {topic: args.partitions, ledger: args.partitions, f"{topic}-dlq": 1}
        )
        started = time.perf_counter()
        in_ledger = prepare(bootstrap, topic, ledger, args.events, args.partitions)
        print(
            f"prepared {args.events:,} events, {in_ledger:,} keys in the ledger "
            f"in {time.perf_counter() - started:.1f}s"
        )

        index = LedgerIndex(max_keys=2 * args.events, retention_ms=WEEK_MS)
        started = time.perf_counter()
        read = LedgerLoader({"bootstrap.servers": bootstrap}, ledger, index).load(
            range(args.partitions)
        )
        load_s = time.perf_counter() - started
        print(f"ledger load: {read:,} records in {load_s:.2f}s = {read / load_s:,.0f} keys/s")

        live = Settings(
            kafka_bootstrap_servers=bootstrap,
            topics=[topic],
            dlq_topic=f"{topic}-dlq",
            group_id=group,
            connect_url=sim.graphql_url,
            connect_api_key=API_KEY,
            default_app_key=APP_KEY,
            http_port=0,
            log_level="WARNING",
        )
        from pipeline.ops.logs import configure_logging

        configure_logging(live)
        settings = bounded_settings(live, f"{group}-replay", [topic])
        bounds = resolve_bounds(settings, [topic], [], Range(from_offset=0))
        started = time.perf_counter()
        summary = run_bounded(settings, bounds, progress=True)
        elapsed = time.perf_counter() - started
        stats = sim.stats()
        print(
            f"replay: {summary.consumed:,} events in {elapsed:.1f}s = "
            f"{summary.consumed / elapsed:,.0f} events/s (ledger load included); "
            f"sent {summary.delivered_total:,}, skipped {summary.skipped:,}, "
            f"dead-lettered {summary.dead_lettered_total:,}; simulator accepted "
            f"{stats['accepted']:,}, duplicates {stats['duplicates']}"
        )


if __name__ == "__main__":
    main()
