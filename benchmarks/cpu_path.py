"""The CPU path per record: Avro decode alone vs decode -> validate -> map.

    python -m benchmarks.cpu_path [--events N] [--runs 5] [--profile]

A realistic clickstream mix of all 11 signal types (``devtools.clickstream``: many
page and product views, fewer orders; about 10% written with the earlier edition's
schemas) is encoded once with the checked-in schemas (``avro/v2``, ``avro/v1``), in
single-object encoding or Confluent framing. Both measurements then run on the same
bytes, in the same process, with the same gc settings:

(a) decode only: bare ``fastavro.schemaless_reader`` with the same writer and reader
    schemas, framing already stripped (the floor any Avro consumer pays);
(b) full path: ``pipeline.signals.processor.EventProcessor.process``, what the consumer runs
    per record, to a ``MappedSignal`` (every event of the mix is valid): the codec's
    lane (cavro to a record object, the type's generated mapper), and for what it is
    not sure of ``EventDecoder.decode`` -> subscription check -> fused or strict path;
(c) the same without the lane: every record decoded to a dict, then the fused path.

The ratio (b)/(a) in events/s says how much of the floor the pipeline keeps (target
>= 0.6). Figures only: this is not a test and never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from devtools.clickstream import clickstream

from pipeline.signals.mapping import MappedSignal, MappingOptions
from pipeline.signals.processor import EventProcessor

AVRO_DIR = Path(__file__).resolve().parents[1] / "avro"
CONFLUENT_SHARE = 0.5  # half the records in Confluent framing, half single-object


@dataclass(frozen=True)
class Prepared:
    value: bytes  # the Kafka record value (framed)
    body: bytes  # the Avro body alone
    writer: Any  # parsed writer schema
    reader: Any  # parsed reader schema (v2)


class _Registry:
    """A stand-in Schema Registry client: schema id -> schema, no network."""

    def __init__(self) -> None:
        self.by_id: dict[int, Any] = {}

    def get_schema(self, schema_id: int, *args: Any, **kwargs: Any) -> Any:
        import json

        from confluent_kafka.schema_registry import Schema

        return Schema(json.dumps(self.by_id[schema_id]), "AVRO")


def _load(edition: int, signal_type: str) -> dict[str, Any]:
    from devtools.producer import load_schema

    return load_schema(AVRO_DIR, edition, signal_type)


def prepare(count: int, seed: int) -> tuple[list[Prepared], Any, dict[str, int]]:
    from pipeline.codec import avro as codec

    registry = _Registry()
    raw: dict[tuple[int, str], dict[str, Any]] = {}
    parsed: dict[tuple[int, str], Any] = {}
    ids: dict[tuple[int, str], int] = {}
    prepared: list[Prepared] = []
    mix: dict[str, int] = {}
    for number, event in enumerate(clickstream(count, seed=seed, invalid_ratio=0.0, v1_ratio=0.1)):
        key = (event.edition, event.signal_type)
        if key not in raw:
            raw[key] = _load(*key)
            parsed[key] = fastavro.parse_schema(raw[key], named_schemas={})
        if key not in ids:  # a v2 reader may have been loaded before it was a writer
            ids[key] = len(ids) + 1
            registry.by_id[ids[key]] = raw[key]
        reader_key = (2, event.signal_type)
        if reader_key not in raw:
            raw[reader_key] = _load(*reader_key)
            parsed[reader_key] = fastavro.parse_schema(raw[reader_key], named_schemas={})
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed[key], event.record)
        if number % 2 == 0 and CONFLUENT_SHARE:
            value = codec.encode_confluent(ids[key], raw[key], event.record)
        else:
            value = codec.encode_single_object(raw[key], event.record)
        assert value.endswith(body.getvalue()), "framing is a header before the Avro body"
        prepared.append(Prepared(value, body.getvalue(), parsed[key], parsed[reader_key]))
        tag = f"{event.signal_type}{' (v1)' if event.edition == 1 else ''}"
        mix[tag] = mix.get(tag, 0) + 1
    decoder = codec.EventDecoder(codec.SchemaStore.from_directory(AVRO_DIR), registry)
    return prepared, decoder, mix


def decode_only(prepared: list[Prepared]) -> int:
    reader = fastavro.schemaless_reader
    n = 0
    for p in prepared:
        reader(io.BytesIO(p.body), p.writer, p.reader)
        n += 1
    return n


class _WithoutLane:
    """The decoder with its ``decode`` only: the processor then has no lane."""

    def __init__(self, decoder: Any) -> None:
        self.decode = decoder.decode


def full_path(decoder: Any, options: MappingOptions) -> Callable[[list[Prepared]], int]:
    process = EventProcessor(decoder, options).process

    def run(prepared: list[Prepared]) -> int:
        ok = 0
        for p in prepared:
            if isinstance(process(p.value), MappedSignal):
                ok += 1
        return ok

    return run


def timed(fn: Callable[[list[Prepared]], int], prepared: list[Prepared], runs: int) -> list[float]:
    """Events per CPU-second of this process for each run; identical gc treatment.

    CPU time, not wall time: on a shared machine a wall clock also counts the time
    other processes held the core, which says nothing about this code.
    """
    rates = []
    for _ in range(runs):
        gc.collect()
        start = time.process_time()
        fn(prepared)
        elapsed = time.process_time() - start
        rates.append(len(prepared) / elapsed)
    return rates


def interleaved(
    a: Callable[[list[Prepared]], int],
    b: Callable[[list[Prepared]], int],
    prepared: list[Prepared],
    runs: int,
) -> tuple[list[float], list[float]]:
    """a, b, a, b, ...: both see the same machine conditions, run by run."""
    rates_a: list[float] = []
    rates_b: list[float] = []
    for _ in range(runs):
        rates_a += timed(a, prepared, 1)
        rates_b += timed(b, prepared, 1)
    return rates_a, rates_b


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"fastavro {fastavro.__version__}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile the full path")
    args = parser.parse_args(argv)

    prepared, decoder, mix = prepare(args.events, args.seed)
    options = MappingOptions(default_app_key="bench-app")
    full = full_path(decoder, options)
    no_lane = full_path(_WithoutLane(decoder), options)
    valid = full(prepared)  # warm-up: caches (adapters, schemas) filled outside the timing
    assert no_lane(prepared) == valid
    decode_only(prepared)

    a, b = interleaved(decode_only, full, prepared, args.runs)
    c = timed(no_lane, prepared, args.runs)
    a_med, b_med, c_med = statistics.median(a), statistics.median(b), statistics.median(c)

    print(f"machine: {machine()}")
    print(f"events: {len(prepared)} ({valid} valid), median of {args.runs} runs")
    print("mix: " + ", ".join(f"{k} {v}" for k, v in sorted(mix.items(), key=lambda kv: -kv[1])))
    print()
    print("| path | events per CPU-second (median) | min | max | CPU µs/event |")
    print("|---|---:|---:|---:|---:|")
    for label, rates, med in (
        ("(a) decode only: fastavro.schemaless_reader", a, a_med),
        ("(b) full: EventProcessor.process (lane, else decode, validate, map)", b, b_med),
        ("(c) full without the lane (decode to a dict, fused)", c, c_med),
    ):
        print(f"| {label} | {med:,.0f} | {min(rates):,.0f} | {max(rates):,.0f} | {1e6 / med:.1f} |")
    print(f"| ratio (b)/(a) | {b_med / a_med:.2f} (target >= 0.6) | | | |")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        full(prepared)
        profiler.disable()
        print()
        stats = pstats.Stats(profiler).strip_dirs().sort_stats("tottime")
        stats.print_stats(25)


if __name__ == "__main__":
    main()
