"""µs per record decoding AddToCartEvent: fastavro vs the accelerated reader (cavro).

    .venv/bin/python -m benchmarks.avro_decoders [--records 1000] [--repeat 9]

The same single-object encoded values through ``EventDecoder`` with
``accelerate=False`` (fastavro) and ``accelerate=True`` (cavro where it applies), for
the current edition (read as is) and the earlier one (resolved to the current),
plus the bare library calls; then the codec's lane (cavro to record objects with
strings as UTF-8 bytes, the type's generated mapper decoding them, one function)
against decoding to a dict and mapping it (fused), both to the same signal. CPU time
of this process (less disturbed than wall time by other work on a shared machine),
best of ``--repeat`` rounds, interleaved.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import fastavro
from devtools.clickstream import clickstream

from pipeline.codec import accelerated
from pipeline.codec.avro import Decoded, EventDecoder, SchemaStore, encode_single_object
from pipeline.codec.schemas import read_schemas
from pipeline.config import DEFAULT_AVRO_DIR
from pipeline.signals import catalog
from pipeline.signals.fused import map_avro_record
from pipeline.signals.mapping import MappingOptions

OPTIONS = MappingOptions(default_app_key="bench-app")


def _values(edition: int, count: int) -> tuple[dict[str, Any], list[bytes]]:
    schema = next(
        s
        for e, s in read_schemas(DEFAULT_AVRO_DIR)
        if e == edition and s["name"] == "AddToCartEvent"
    )
    events = clickstream(count * 12, seed=1, invalid_ratio=0, v1_ratio=float(edition == 1))
    records = [e.record for e in events if e.signal_type == "addToCart"][:count]
    return schema, [encode_single_object(schema, r) for r in records]


def _best_us(
    calls: dict[str, Callable[[bytes], object]], values: Sequence[bytes], repeat: int
) -> dict[str, float]:
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.process_time()
            for value in values:
                call(value)
            best[name] = min(best[name], (time.process_time() - start) / len(values) * 1e6)
    return best


def _fastavro_body(value: bytes, parsed: Any) -> object:
    return fastavro.schemaless_reader(io.BytesIO(value[10:]), parsed, None)


def _at(reader: Callable[[bytes, int], object], value: bytes) -> object:
    return reader(value, 10)


def _laned(lane: Callable[[bytes | None, Any], object], value: bytes) -> object:
    return lane(value, None)


def _decoded_and_mapped(decoder: EventDecoder, value: bytes) -> object:
    decoded = decoder.decode(value)
    assert isinstance(decoded, Decoded)
    return map_avro_record("addToCart", decoded.record, OPTIONS)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    print(f"cavro installed: {accelerated.available()}")
    store = SchemaStore.from_directory(DEFAULT_AVRO_DIR)
    for edition in (2, 1):
        schema, values = _values(edition, args.records)
        reference = EventDecoder(store, accelerate=False)
        fast = EventDecoder(store, accelerate=True)
        assert all(reference.decode(v) == fast.decode(v) for v in values)
        parsed = fastavro.parse_schema(schema)
        calls: dict[str, Callable[[bytes], object]] = {
            "EventDecoder, fastavro": reference.decode,
            "EventDecoder, auto (cavro)": fast.decode,
        }
        if edition == 2:
            calls["fastavro.schemaless_reader"] = partial(_fastavro_body, parsed=parsed)
            reader = accelerated.compile_reader(schema)
            if reader is not None:
                calls["cavro binary_read + end check"] = partial(_at, reader)
        label = "current edition, read as is" if edition == 2 else "earlier edition, resolved to v2"
        print(
            f"\nAddToCartEvent v{edition} ({label}), {len(values)} records, best of {args.repeat}:"
        )
        lane = fast.signal_lane(OPTIONS, frozenset(catalog.SIGNAL_TYPES))
        assert lane is not None
        assert all(lane(v, None) == _decoded_and_mapped(fast, v) for v in values)
        calls["lane: bytes to signal"] = partial(_laned, lane)
        calls["decode (cavro) + fused map"] = partial(_decoded_and_mapped, fast)
        calls["decode (fastavro) + fused map"] = partial(_decoded_and_mapped, reference)
        reader = accelerated.compile_object_reader(schema) if edition == 2 else None
        if reader is not None:
            calls["cavro to record objects + end"] = partial(_at, reader)
        figures = _best_us(calls, values, args.repeat)
        for name, us in figures.items():
            print(f"  {name:32s} {us:7.2f} CPU µs/record")
        ratio = figures["EventDecoder, fastavro"] / figures["EventDecoder, auto (cavro)"]
        print(f"  {'speed-up (EventDecoder)':32s} {ratio:7.2f}x")


if __name__ == "__main__":
    main()
