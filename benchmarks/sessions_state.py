"""The session stage's own figures: memory per open session, restore time, cost per event.

    python -m benchmarks.sessions_state [--sessions 100000] [--store memory|rocksdb]
    python -m benchmarks.sessions_state --peer [events]   (the peer workload's path, pure)

Pure (no broker): sessions of a typical shape (a page view, two product views, an
add-to-cart) are fed to one partition's store; memory is measured with tracemalloc,
restore is ``SessionStore.restore`` from the changelog records the store wrote (the
decode and rebuild, without the Kafka read), and the cost per event is ``observe``
with a commit (``take_changes``: the changelog records, and for RocksDB the write
back) every 2,000 events, next to the decode-free catalog path (validate + map) the
same events take. ``--store rocksdb``: the states in RocksDB (the rocksdb extra);
memory is then what Python holds (the expiry heap, the states changed since the last
commit), beside RocksDB's own bounded buffers, and the database's size on disk.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.sessions.derive import KINDS, DeriveOptions
from pipeline.sessions.store import SessionOptions, SessionStore
from pipeline.sessions.tables import MemoryBackend, StateBackend
from pipeline.signals.check import CheckOptions, process_record
from pipeline.signals.mapping import MappedSignal, MappingOptions


def _events(sessions: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for n in range(sessions):
        sid = f"sess-{n:08d}"
        base = {
            "sessionId": sid,
            "appKey": "app-1",
            "identifiableAttributes": {"email": f"visitor{n}@example.com"},
        }
        second = n // 100
        stamp = f"2025-08-31T08:{second // 60 % 60:02d}:{second % 60:02d}.{n % 1000:03d}Z"
        common = {**base, "eventTime": stamp}
        events += [
            {**common, "signalType": "pageView", "eventId": f"{sid}-1", "url": "https://x/"},
            *(
                {
                    **common,
                    "signalType": "productView",
                    "eventId": f"{sid}-{2 + k}",
                    "productId": f"P-{(n + k) % 5000}",
                    "productName": "Teak Outdoor Dining Chair",
                    "unitPrice": 249.99,
                    "currency": "USD",
                    "productUrls": [f"https://www.example.com/p/{(n + k) % 5000}"],
                }
                for k in range(2)
            ),
            {
                **common,
                "signalType": "addToCart",
                "eventId": f"{sid}-4",
                "productId": f"P-{n % 5000}",
                "productName": "Teak Outdoor Dining Chair",
                "itemQuantity": 1,
                "unitPrice": 249.99,
                "currency": "USD",
                "shoppingCartUrl": "https://www.example.com/cart",
            },
        ]
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument(
        "--broker", action="store_true", help="also time the read from an embedded broker"
    )
    parser.add_argument("--store", choices=("memory", "rocksdb"), default="memory")
    args = parser.parse_args()
    backend: StateBackend = MemoryBackend()
    directory: Path | None = None
    if args.store == "rocksdb":
        from pipeline.sessions.rocks import RocksBackend

        rocks = RocksBackend(Path(tempfile.mkdtemp(prefix="sessions-bench-")))
        backend, directory = rocks, rocks.directory
    partitions = iter(range(1_000_000))

    def new_store() -> SessionStore:
        return SessionStore("clicks", options, backend.tables(("clicks", next(partitions))))

    options = SessionOptions(
        DeriveOptions(KINDS["both"], MappingOptions()), max_open=args.sessions + 1
    )
    check = CheckOptions(MappingOptions())
    records = _events(args.sessions)

    start = time.perf_counter()
    signals = [process_record(r, check) for r in records]
    map_s = time.perf_counter() - start
    assert all(isinstance(s, MappedSignal) for s in signals)

    store = new_store()
    start = time.process_time()
    for offset, signal in enumerate(signals):
        store.observe(signal, offset=offset)  # type: ignore[arg-type]
        if offset % COMMIT_EVERY == 0:
            store.take_changes()
    store.take_changes()
    observe_s = time.process_time() - start
    assert store.open_count == args.sessions

    del store
    gc.collect()
    # Memory: the signals are mapped inside the trace and dropped after observe, so
    # what stays is what the store holds (events' content it keeps by reference too).
    del signals
    gc.collect()
    tracemalloc.start()  # (slows everything down: not timed)
    store = new_store()
    for offset, record in enumerate(records):
        store.observe(process_record(record, check), offset=offset)  # type: ignore[arg-type]
        if offset % COMMIT_EVERY == 0:
            store.take_changes()  # (the records go to Kafka: not kept here)
    store.take_changes()
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    disk = directory and sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    del store
    gc.collect()
    store = new_store()  # again, keeping the changelog this time, for the restore
    log = []
    for offset, signal in enumerate(process_record(r, check) for r in records):
        store.observe(signal, offset=offset)  # type: ignore[arg-type]
        if offset % COMMIT_EVERY == 0:
            log += store.take_changes()
    log += store.take_changes()
    log_bytes = sum(len(k) + len(v or b"") for k, v in log)
    start = time.perf_counter()
    restored = SessionStore.restore("clicks", options, log, backend.tables(("clicks", -1)))
    restore_s = time.perf_counter() - start
    assert restored.open_count == args.sessions

    if args.broker:
        read_s = broker_restore(log)
        print(f"restore from a broker    {read_s:.2f} s to read the changelog partition")
    per_session = held / args.sessions
    print(f"open sessions            {args.sessions:,} (4 events each), {args.store}")
    print(f"memory per open session  {per_session:,.0f} B  -> {2**30 / per_session:,.0f} per GiB")
    if disk:
        print(f"on disk (RocksDB)        {disk / args.sessions:,.0f} B per session")
    print(f"changelog                {log_bytes / args.sessions:,.0f} B per session")
    print(f"restore                  {restore_s:.2f} s for {args.sessions:,} sessions (decode)")
    print(f"observe (+ commits)      {observe_s / len(records) * 1e6:.1f} µs CPU per event")
    print(f"validate + map (JSON)    {map_s / len(records) * 1e6:.1f} µs per event")
    del store, restored, log  # a heap of 200,000 sessions slows every allocation after
    gc.collect()
    process_us, observe_us = clickstream_cost()
    print(
        f"demo clickstream         decode+validate+map {process_us:.1f} µs, observe "
        f"{observe_us:.1f} µs per record (+{observe_us / process_us:.0%} of the CPU path)"
    )


COMMIT_EVERY = 2_000


def broker_restore(log: list[tuple[bytes, bytes | None]]) -> float:
    """Seconds to read one changelog partition holding ``log`` (embedded Tansu broker)."""
    from confluent_kafka import Producer
    from devtools.broker import EmbeddedBroker

    from pipeline.kafka.session_changelog import ensure_changelog_topic, read_changelog

    with EmbeddedBroker() as broker:
        conf = {"bootstrap.servers": broker.bootstrap_servers}
        ensure_changelog_topic(conf, "sessions", 1)
        producer = Producer({**conf, "linger.ms": 50})
        for key, value in log:
            while True:
                try:
                    producer.produce("sessions", key=key, value=value, partition=0)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(120)
        start = time.perf_counter()
        records = read_changelog(conf, "sessions", [0])[0]
        seconds = time.perf_counter() - start
        assert len(records) == len(log)
        return seconds


def clickstream_cost(events: int = 100_000) -> tuple[float, float]:
    """(µs per record of decode->validate->map, µs more with observe) on the demo
    clickstream mix (devtools.clickstream, Avro single-object), in one process."""
    from itertools import islice

    from devtools.clickstream import clickstream
    from devtools.producer import EventEncoder

    from pipeline.config import DEFAULT_AVRO_DIR, Settings
    from pipeline.kafka.runner import build_processor

    settings = Settings(topics=["clicks"], default_app_key="app")
    processor = build_processor(settings)
    encoder = EventEncoder(DEFAULT_AVRO_DIR)
    values = [encoder.encode(e) for e in islice(clickstream(events, invalid_ratio=0.0), events)]
    options = SessionOptions(DeriveOptions(KINDS["both"], MappingOptions("app")))
    outcomes = [processor.process(v) for v in values]  # warm the caches
    start = time.perf_counter()
    outcomes = [processor.process(v) for v in values]
    process_s = time.perf_counter() - start
    store = SessionStore("clicks", options)
    start = time.perf_counter()
    for offset, outcome in enumerate(outcomes):
        if isinstance(outcome, MappedSignal):
            store.observe(outcome, offset=offset)
    observe_s = time.perf_counter() - start
    return process_s / events * 1e6, observe_s / events * 1e6


def peer_cost(events: int = 100_000, rounds: int = 2) -> tuple[float, float, float]:
    """The peer workload's consumer path without Kafka or HTTP, alternated ``rounds``
    times: (P CPU µs per source event, PD CPU µs per source event, PD's signals per
    source event). P: decode, map and the JSON fragment of each event; PD adds the
    session stage as the consumer drives it (observe with the record's key, a tick
    and the settles every 500 records, the changelog records every 4,000) and the
    fragment of each derived signal. Events as the harness's: add-to-carts of their
    own sessions, 37 ms apart, over 6 partitions, default 30-minute gap."""
    import random
    import uuid
    from datetime import UTC, datetime, timedelta

    from confluent_kafka import Message
    from devtools.producer import load_schema

    from pipeline.codec.avro import encode_single_object
    from pipeline.config import DEFAULT_AVRO_DIR, Settings
    from pipeline.connect.request import encode_signal
    from pipeline.kafka.runner import build_processor
    from pipeline.kafka.session_hooks import SessionHooks
    from pipeline.sessions.options import session_options

    rnd = random.Random(42)
    schema = load_schema(DEFAULT_AVRO_DIR, 2, "addToCart")
    start = datetime(2024, 5, 1, tzinfo=UTC)
    messages = []
    for n in range(events):
        product = f"SKU-{rnd.randrange(10**8):08d}"
        record = {
            **dict.fromkeys(("appKey", "category", "description", "signalCustomAttributes")),
            **dict.fromkeys(("imageUrls", "productCategoryId", "productDescription")),
            **dict.fromkeys(("promotionId", "shoppingCartUrl", "virtualCategory")),
            "eventId": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            "sessionId": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
            "identifiableAttributes": {
                "contactKey": f"contact-{rnd.randrange(20_000)}@example.com",
                **dict.fromkeys(("email", "sms", "whatsapp")),
            },
            "eventTime": start + timedelta(milliseconds=n * 37),
            "name": "Add To Cart",
            "effect": "positive",
            "currency": "USD",
            "productId": product,
            "productName": f"Premium Non-Stick Skillet - Model {rnd.randrange(1000, 9999)}",
            "itemQuantity": rnd.randint(1, 5),
            "unitPrice": round(rnd.uniform(3, 500), 2),
            "discount": None if rnd.random() < 0.5 else round(rnd.uniform(0, 0.3), 2),
            "productCategory": "Home & Kitchen > Cookware > Frying Pans",
            "productUrls": [f"https://shop.example.com/products/{product.lower()}"],
        }
        value = encode_single_object(schema, record)
        key = str(record["sessionId"]).encode()
        messages.append(Message(topic="t", partition=n % 6, offset=n // 6, key=key, value=value))
    settings = Settings(topics=["t"], default_app_key="app", derive_abandonment="both")
    processor = build_processor(settings)
    processor.process(messages[0].value())  # warm (the codec's lazy imports)

    def run(derive: bool) -> tuple[float, int]:
        options = session_options(settings, MappingOptions("app"))
        assert options is not None
        hooks = SessionHooks(settings, options)
        for partition in range(6):
            hooks.stage.assign(("t", partition), [])
        signals = 0
        settles: list[Callable[[], None]] = []

        def produce(*args: Any, **kwargs: Any) -> None:
            pass

        gc.collect()
        began = time.process_time()
        for n, message in enumerate(messages):
            outcome = processor.process(message.value())
            assert isinstance(outcome, MappedSignal)
            encode_signal(outcome.signal)
            signals += 1
            if not derive:
                continue
            emits = hooks.observe(message, outcome)
            if n % 500 == 0:
                emits += hooks.tick(())
                for settled in settles:
                    settled()
                settles = []
            for emit in emits:
                assert isinstance(emit.outcome, MappedSignal)
                encode_signal(emit.outcome.signal)
                settles.append(emit.settled)
            signals += len(emits)
            if n % 4_000 == 0:
                hooks.write(produce)
                hooks.committed()
        return time.process_time() - began, signals

    p_s, pd_s, pd_signals = 0.0, 0.0, 0
    for _ in range(rounds):
        p_s += run(False)[0]
        seconds, pd_signals = run(True)
        pd_s += seconds
    per = rounds * events / 1e6
    return p_s / per, pd_s / per, pd_signals / events


if __name__ == "__main__":
    if "--peer" in sys.argv:  # python -m benchmarks.sessions_state --peer [events]
        rest = sys.argv[sys.argv.index("--peer") + 1 :]
        p_us, pd_us, ratio = peer_cost(int(rest[0]) if rest else 100_000)
        print(f"peer workload, pure   P {p_us:.1f} µs, PD {pd_us:.1f} µs CPU per source event")
        print(
            f"per signal (PD: {ratio:.2f} per source event)   P {p_us:.1f} µs, "
            f"PD {pd_us / ratio:.1f} µs ({pd_us / ratio / p_us:.2f}x)"
        )
    else:
        main()
