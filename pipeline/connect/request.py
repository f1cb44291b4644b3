"""What one createSignals request carries: the batch, its body, its Idempotency-Key,
and the RFC 8941 lists its headers use.

The body is graphql-core's constant document with the signals as variables, written
from fragments each signal was serialised to once (``encode_signal``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from pipeline.connect.document import CREATE_SIGNALS, OPERATION_NAME


@dataclass(slots=True)
class Batch:
    """Signals bound for one createSignals call, as pre-serialised JSON fragments."""

    keys: list[str]
    fragments: list[bytes]
    #: Opaque references the consumer uses to find the records again.
    refs: list[Any]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def body_bytes(self) -> int:
        return sum(len(f) + 1 for f in self.fragments) + _ENVELOPE_BYTES

    def subset(self, indices: Sequence[int]) -> Batch:
        return Batch(
            [self.keys[i] for i in indices],
            [self.fragments[i] for i in indices],
            [self.refs[i] for i in indices],
        )


_BODY_PREFIX: Final = (
    b'{"query":'
    + json.dumps(CREATE_SIGNALS).encode()
    + b',"operationName":"'
    + OPERATION_NAME.encode()
    + b'","variables":{"signals":['
)
_BODY_SUFFIX: Final = b"]}}"
_ENVELOPE_BYTES: Final = len(_BODY_PREFIX) + len(_BODY_SUFFIX)


def encode_signal(signal: dict[str, Any]) -> bytes:
    """One signal as a JSON fragment of the request body (escaped by the encoder).

    orjson: compact UTF-8; on a realistic stream of distinct signals about 1.5 times
    faster than ``json.dumps`` (3.7 against 5.7 µs per signal on the benchmark machine).
    It refuses unpaired surrogates and integers over 64 bits; validation already
    keeps numbers finite (orjson would write NaN as null) and within GraphQL Int.

    orjson's result keeps its whole working buffer (~8 KiB of memory for a ~0.8 KiB
    fragment); a fragment waits in a batch, so it is copied to its own size (0.4 µs).
    """
    return memoryview(orjson.dumps(signal)).tobytes()


def batch_body(fragments: Sequence[bytes]) -> bytes:
    """The request body: graphql-core's constant document, the signals as variables.

    One join, the envelope joined to the first and last fragments: ``prefix + join +
    suffix`` made two more copies of the whole body (~200 KiB for 500 signals), and
    fresh large buffers cost page faults (in-process: 380 against 18 µs a body)."""
    if len(fragments) < 2:
        return _BODY_PREFIX + b"".join(fragments) + _BODY_SUFFIX
    return b",".join([_BODY_PREFIX + fragments[0], *fragments[1:-1], fragments[-1] + _BODY_SUFFIX])


def batch_key(signal_keys: Sequence[str]) -> str:
    """The batch's Idempotency-Key: a function of exactly the signals it carries.

    A retried batch carries the same key; a re-formed batch (after isolating a bad
    signal) carries different signals and so a different key.
    """
    digest = hashlib.sha256("\n".join(signal_keys).encode()).hexdigest()
    return f"b-{digest[:48]}"


def sf_string(value: str) -> str:
    """An RFC 8941 sf-string (keys are plain ASCII by construction; escape anyway)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sf_list(values: Sequence[str]) -> str:
    """An RFC 8941 list of sf-strings, in order."""
    plain = "".join(values)
    if not values or '"' in plain or "\\" in plain:  # rare: escape key by key
        return ", ".join(sf_string(v) for v in values)
    return '"' + '", "'.join(values) + '"'  # the usual case: two joins in C, no loop
