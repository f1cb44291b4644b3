"""The delivery ledger at production volume: start time whatever its size, replay memory.

    python -m benchmarks ledger                      # the full figures (11M ledger records)
    python -m benchmarks.ledger --scale 0.02         # a small version (about a minute)
    python -m benchmarks.ledger [--sizes 0,1000000,5000000] [--replay-events 1000000]
                                [--replay-keys 5000000] [--events 2000] [--tail 200]

(1) Start: for each ledger size, a source partition of ``--events`` events committed
    ``--tail`` before its end, and its group's ledger partition holding that many
    records (written directly, fast, as a live writer leaves them: every record below
    the committed offset). Then ``connect-pipeline run`` as a child process; printed:
    the time from its launch to the first signal the simulator accepted, and to the
    last of the tail. The ledger's size must not show in them.
(2) Replay: ``--replay-events`` events in one partition, every other one already in
    the ledger, which holds ``--replay-keys`` keys in all (the rest from a week of
    another source). ``connect-pipeline replay --from-offset 0`` as a child process:
    its peak RSS (the kernel's VmHWM of that process), time, what it sent and skipped,
    and what its ledger join read and held (``pipeline.kafka.ledger_join``), twice:
    the range's records after the other source's week ("after"), and spread over the
    whole retention, one in ten records ("spread": every window re-reads the ledger
    stretch that names it). Both with the default ``PIPELINE_LEDGER_MAX_KEYS``
    (windows of a quarter of it).
(3) Ledger bytes per key: in memory (the index, tracemalloc) and on the broker (one
    format-2 record in a record batch, before compression).

Real components: the embedded Tansu broker (or ``PIPELINE_KAFKA_BOOTSTRAP_SERVERS``), the
simulator and a schema registry over HTTP. Figures only; never a test.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final

from confluent_kafka import Consumer, Producer, TopicPartition
from devtools.clickstream import clickstream
from devtools.producer import produce_events

from benchmarks.stack import REPO, Stack
from pipeline.kafka.ledger import LedgerIndex, encode, ensure_ledger_topic, topic_id
from pipeline.kafka.ledger_records import batch_key, encode_batch

WEEK_MS: Final = 7 * 24 * 3_600_000
MIB: Final = 1024 * 1024


def write_ledger(bootstrap: str, ledger: str, records: Iterable[tuple[bytes, bytes]]) -> float:
    """Write ledger records fast (large lz4 batches); returns records/s."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 100,
            "batch.num.messages": 10_000,
            "batch.size": 4_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "compression.type": "lz4",
        }
    )
    started, count = time.perf_counter(), 0
    produce = producer.produce
    for key, value in records:
        while True:
            try:
                produce(ledger, key=key, value=value, partition=0)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    assert producer.flush(300) == 0
    return count / max(time.perf_counter() - started, 1e-9)


def live_records(source: str, count: int, below: int, now_ms: int) -> Iterator[tuple[bytes, bytes]]:
    """``count`` records of ``source[0]`` offsets below ``below``, as a live writer
    leaves them (offsets rising, each record's horizon just past its offset)."""
    tid = topic_id(source)
    for i in range(count):
        offset = i * below // count
        yield f"bench-{source}-{i:012d}".encode(), encode(now_ms, tid, 0, offset, offset + 1)


def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def loaded_line(log_text: str) -> str:
    """The pipeline's own account of its ledger loads (JSON log lines)."""
    loads = []
    for line in log_text.splitlines():
        if '"ledger loaded"' not in line:
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            loads.append(
                f"ledger loaded: read {entry.get('read'):,}, kept {entry.get('kept', '-')}, "
                f"from offset {entry.get('from_offset', '-')}, {entry.get('seconds')} s"
            )
    return "; ".join(loads) or "(no ledger load logged)"


def start_times(
    stack: Stack, size: int, events: int, tail: int, runs: int, seed: int
) -> list[tuple[float, float, str]]:
    """Per run: seconds from launch to the first and to the last accepted signal of the
    tail, and the pipeline's own account of its ledger load.

    One source partition and one ledger of ``size`` records for all runs; each run
    appends its own events (the simulator counts a key once) and starts a new group
    committed ``tail`` before the end, on that ledger."""
    topic = stack.create_topic(1, prefix="bench-ledger")
    ledger = f"{topic}-ledger"
    ensure_ledger_topic({"bootstrap.servers": stack.bootstrap}, ledger, 1, WEEK_MS)
    if size:  # every record below the first run's committed offset
        records = live_records(topic, size, events - tail, int(time.time() * 1000))
        rate = write_ledger(stack.bootstrap, ledger, records)
        print(f"  ledger of {size:,} records written at {rate:,.0f}/s", flush=True)
    results = []
    end = 0
    for run in range(runs):
        batch = clickstream(events, seed=seed * 100 + run, invalid_ratio=0)
        end += produce_events(stack.bootstrap, topic, batch, stack.encoder())
        group = f"bench-ledger-{uuid.uuid4().hex[:8]}"
        commit(stack.bootstrap, group, topic, end - tail)
        before = int(stack.sim.stats()["accepted"])
        launched = time.monotonic()
        process = stack.start_pipeline(
            topic, group, LEDGER_TOPIC=ledger, LEDGER_MAX_KEYS=str(max(size, 1_000_000))
        )
        try:
            trace = stack.wait_accepted(before + tail, launched, [process], timeout_s=600)
        finally:
            process.stop()
        first = next((t for t, n in trace.samples if n > before), None)
        last = next((t for t, n in trace.samples if n >= before + tail), None)
        log_text = process.log_path.read_text()
        if first is None or last is None:
            raise RuntimeError("the tail was not delivered: " + log_text[-2000:])
        results.append((first - launched, last - launched, loaded_line(log_text)))
    return results


def joined_line(log_text: str) -> str:
    """The replay's own account of its ledger join (JSON log lines)."""
    for line in log_text.splitlines():
        if '"replay joined with the ledger"' in line:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                return (
                    f"join: {entry.get('windows')} windows of {entry.get('window'):,} offsets,"
                    f" ledger read {entry.get('ledger_planned'):,} (plan)"
                    f" + {entry.get('ledger_reread'):,} (windows),"
                    f" peak keys held {entry.get('peak_keys_held'):,},"
                    f" format-1 keys {entry.get('format1_keys')}"
                )
    return "(no ledger join logged)"


def replay_rss(
    stack: Stack, events: int, keys: int, seed: int, *, spread: bool = False
) -> dict[str, object]:
    """Peak RSS of ``connect-pipeline replay`` over ``events`` with ``keys`` in the ledger;
    ``spread``: the range's records spread over the whole ledger, not after the rest."""
    backlog = stack.produce_backlog(events, partitions=1, invalid_ratio=0, seed=seed)
    topic, group = backlog.topic, f"bench-replay-{uuid.uuid4().hex[:8]}"
    ledger = f"{group}-ledger"
    ensure_ledger_topic({"bootstrap.servers": stack.bootstrap}, ledger, 1, WEEK_MS)
    now = int(time.time() * 1000)
    delivered = [e.event_id for e in clickstream(events, seed=seed, invalid_ratio=0)][::2]
    history = max(0, keys - len(delivered))
    tid = topic_id(topic)

    def records() -> Iterator[tuple[bytes, bytes]]:
        others = live_records(f"{topic}-last-week", history, 10 * history + 1, now)
        per_key = history // max(1, len(delivered)) if spread else 0
        if not spread:
            yield from others
        for n, key in enumerate(delivered):  # every other event of the range: offset 2n
            for _ in range(per_key):
                yield next(others)
            yield key.encode(), encode(now, tid, 0, 2 * n, 2 * n + 1)
        yield from others  # what is left (spread: the remainder of the division)

    rate = write_ledger(stack.bootstrap, ledger, records())
    print(f"  ledger of {history + len(delivered):,} keys written at {rate:,.0f}/s", flush=True)
    env = stack.pipeline_env(topic, group)  # the default PIPELINE_LEDGER_MAX_KEYS
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "replay", "--from-offset=0", "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=(stack.workdir / "replay.log").open("wb"),
        cwd=REPO,
    )
    assert child.stdout is not None
    # VmHWM of the child's own address space: ru_maxrss would count this (large) process
    # too, as a forked child's high-water mark starts from its parent's before the exec
    peak = 0
    while child.poll() is None:
        peak = max(peak, vm_hwm(child.pid))
        time.sleep(0.1)
    output = child.stdout.read()
    elapsed = time.monotonic() - started
    if child.returncode != 0:
        raise RuntimeError((stack.workdir / "replay.log").read_text()[-2000:])
    report = json.loads(output.decode().strip().splitlines()[-1])
    return {
        "peak_rss_mib": peak / MIB,
        "seconds": elapsed,
        "ledger_keys": history + len(delivered),
        "in_range": len(delivered),
        "log": joined_line((stack.workdir / "replay.log").read_text()),
        **report,
    }


def vm_hwm(pid: int) -> int:
    """The kernel's peak resident set of a running process, in bytes (0 once gone)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def bytes_per_key_in_memory(count: int) -> float:
    keys = [f"evt-{n:024d}" for n in range(count)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = LedgerIndex(max_keys=count + 1, retention_ms=WEEK_MS)
    now = int(time.time() * 1000)
    for key in keys:
        index.add(key, now)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count


def bytes_per_key_v3(key_length: int, keys: int) -> float:
    """Broker bytes per key of a format-3 record (one per delivered batch and source
    partition) holding ``keys`` keys, before compression."""
    entries = [(offset, "k" * key_length) for offset in range(keys)]
    value = encode_batch(0, 0, 0, entries, keys)
    assert value is not None
    record_key = len(batch_key(value))
    body = 1 + 1 + 1 + 1 + record_key + 3 + len(value) + 1  # varints of a record this size
    return (2 + body) / keys


def bytes_per_record_on_broker(key_length: int) -> int:
    """A format-2 record in a v2 record batch (no headers), before compression."""

    def varint(n: int) -> int:
        n = (n << 1) ^ (n >> 63)
        size = 1
        while n >= 0x80:
            n >>= 7
            size += 1
        return size

    value = len(encode(0, 0, 0, 0, 1))
    body = 1 + varint(0) + varint(0) + varint(key_length) + key_length + varint(value) + value + 1
    return varint(body) + body


def run(args: argparse.Namespace, add: Callable[[str, str], None]) -> None:
    scale = args.scale
    sizes = [int(s * scale) for s in args.sizes]
    add("ledger B/key in memory (index, 28-char keys)", f"{bytes_per_key_in_memory(200_000):.1f}")
    add("ledger B/record on the broker (28-char key)", str(bytes_per_record_on_broker(28)))
    per_key = bytes_per_key_v3(28, 500)
    add("ledger B/key on the broker, format 3 (500 28-char keys a record)", f"{per_key:.1f}")
    with Stack() as stack:
        seed = int(time.time()) % 100_000  # events the simulator has never seen
        medians = []
        for n, size in enumerate(sizes):
            print(f"start with a ledger of {size:,} records", flush=True)
            results = start_times(stack, size, args.events, args.tail, args.runs, seed + n)
            firsts = [first for first, _, _ in results]
            medians.append(statistics.median(firsts))
            add(
                f"start: ledger {size:,}: first accepted (median of {len(results)})",
                f"{medians[-1]:.2f} s (runs: {', '.join(f'{f:.2f}' for f in firsts)})",
            )
            lasts = [last for _, last, _ in results]
            add(
                f"start: ledger {size:,}: tail of {args.tail} accepted",
                f"{statistics.median(lasts):.2f} s",
            )
            for _, _, loaded in results:
                print(f"    {loaded}", flush=True)
        if medians:
            add("start: spread of the medians (max - min)", f"{max(medians) - min(medians):.2f} s")
        events, keys = int(args.replay_events * scale), int(args.replay_keys * scale)
        peaks = []
        for n, spread in enumerate((False, True)):
            layout = "spread over the retention" if spread else "after the rest"
            print(f"replay of {events:,} events, {keys:,} keys, {layout}", flush=True)
            replay = replay_rss(stack, events, keys, seed + len(sizes) + n, spread=spread)
            peaks.append(replay["peak_rss_mib"])
            name = f"replay {events:,} events, ledger {keys:,} keys ({layout})"
            add(f"{name}: peak RSS", f"{replay['peak_rss_mib']:.0f} MiB")
            sent, skipped = replay["sent"], replay["skipped_already_delivered"]
            add(f"{name}: time, sent, skipped", f"{replay['seconds']:.1f} s, {sent:,}, {skipped:,}")
            add(f"{name}: ledger join", str(replay["log"]))
        # the last line: what `python -m benchmarks` quotes in its table
        starts = ", ".join(f"{size:,}: {m:.2f} s" for size, m in zip(sizes, medians, strict=True))
        spread_of = f"{max(medians) - min(medians):.2f} s" if medians else "-"
        print(
            f"start medians (ledger records: s) {starts or '-'}, spread {spread_of};"
            f" replay {events:,} events over {keys:,} keys: peak RSS"
            f" {peaks[0]:.0f} MiB (range after the rest), {peaks[1]:.0f} MiB (spread)",
            flush=True,
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[0, 1_000_000, 5_000_000],
        help="ledger sizes of the start runs ('' : replay only)",
    )
    p.add_argument("--events", type=int, default=2_000, help="source events of each start run")
    p.add_argument("--tail", type=int, default=200, help="events after the committed offset")
    p.add_argument("--runs", type=int, default=3, help="start runs per ledger size (median)")
    p.add_argument("--replay-events", type=int, default=1_000_000)
    p.add_argument("--replay-keys", type=int, default=5_000_000)
    p.add_argument("--scale", type=float, default=1.0, help="multiply ledger and replay sizes")
    return p


def main() -> None:
    args = parser().parse_args()
    run(args, lambda figure, value: print(f"  {figure} = {value}", flush=True))


if __name__ == "__main__":
    main()
