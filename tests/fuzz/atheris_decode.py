"""Coverage-guided fuzzing of decode -> validate -> map with atheris (libFuzzer).

Not a test: a long run you start by hand (``pip install -e '.[fuzz]'`` first)::

    .venv/bin/python -m tests.fuzz.atheris_decode -max_total_time=300 \\
        -artifact_prefix=/tmp/fuzz- /tmp/fuzz-corpus tests/fuzz/corpus

The first input byte picks the seed (a valid encoding of some type and edition, in
either framing) and the rest is spliced over it, so libFuzzer starts from deep inside
valid Avro instead of guessing framings. Any exception or broken invariant (see
``hostile.check_value``) is a crash: libFuzzer writes the input to
``<artifact_prefix>crash-*``; copy it into ``tests/fuzz/corpus/`` under a descriptive
name, fix the product code, and ``test_regression_corpus`` replays it from then on.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from pipeline import codec, mapping, processor, validation  # noqa: F401
    from tests.fuzz.hostile import check_value, valid_encodings
    from tests.fuzz.hostile import processor as make_processor


def main() -> None:
    seeds = valid_encodings()
    under_test = make_processor()

    def one_input(data: bytes) -> None:
        if data and data[0] & 1:  # odd first byte: splice over a valid seed
            seed = seeds[data[0] // 2 % len(seeds)]
            at = data[1] % len(seed) if len(data) > 1 else 0
            value = seed[:at] + data[2:] + seed[at + len(data) - 2 :]
        else:
            value = data[1:]
        check_value(under_test.process(value))

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
