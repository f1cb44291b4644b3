"""Hostile input through decode -> validate -> map -> request (issue 7, item 2).

Every case must come out as a ``Rejection`` a user can act on or a signal that can be
sent: never an exception, a hang or unbounded memory. Hypothesis drives random bytes,
mutations of valid encodings and validly encoded hostile records; targeted cases cover
length claims, oversized values, invalid UTF-8, NaN and infinities. Crashes found are
kept in ``corpus/`` and replayed by ``test_regression_corpus``.

Examples per test: ``FUZZ_EXAMPLES`` (default small for CI; raise it for a long run).
"""

from __future__ import annotations

import math
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.codec.avro import SINGLE_OBJECT_MAGIC, crc64_fingerprint
from pipeline.signals import catalog
from pipeline.signals.mapping import MappedSignal
from pipeline.signals.outcomes import Reason, Rejection
from tests.fuzz.hostile import (
    CORPUS,
    avro_schema,
    check_outcome,
    check_signal,
    editions,
    encode,
    registry,
    sample_records,
    valid_encodings,
    zigzag_varint,
)

EXAMPLES: Final = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("FUZZ_RANDOM") is None,  # CI: reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

INJECTIONS: Final = (
    '"} } mutation { deleteAll { ok } } #',
    '\\"}) { signalIds } } mutation X { y(z: "',
    "\u0000\u0001\u001f\u007f",
    "\u2028\u2029\ufeff\ufffd",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🧨🛒👩‍👩‍👧",
    "a\\nb\\u0022c",
    "$signals",
    "# comment\n}",
    '"""block"""',
    "\r\n\t",
)

hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(INJECTIONS),
    st.builds(lambda s, n: s * n, st.sampled_from(["x", "é", "🧨", '"']), st.integers(0, 3000)),
)


# --- 1. arbitrary bytes behind every framing --------------------------------------


def _framings() -> st.SearchStrategy[bytes]:
    _, ids = registry()
    fingerprints = [crc64_fingerprint(avro_schema(e, t)) for e, t in editions()]
    return st.one_of(
        st.just(b""),
        st.sampled_from([b"\x00" + i.to_bytes(4, "big") for i in ids.values()]),
        st.sampled_from([SINGLE_OBJECT_MAGIC + fp for fp in fingerprints]),
        st.binary(min_size=1, max_size=12),
    )


@FUZZ
@given(prefix=_framings(), body=st.binary(max_size=300))
def test_random_bytes_behind_every_framing(prefix: bytes, body: bytes) -> None:
    check_outcome(prefix + body)


# --- 2. mutations of valid encodings -------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    value = bytearray(draw(st.sampled_from(valid_encodings())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(value)))
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "varint", "delete"]))
        if kind == "truncate":
            del value[at:]
        elif kind == "flip" and at < len(value):
            value[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            value[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "varint":
            claim = draw(st.sampled_from([2**31, -(2**31), 2**62, -1, 2**63 - 1, -(2**63)]))
            value[at : at + 1] = zigzag_varint(claim)
        elif kind == "delete":
            del value[at : at + draw(st.integers(1, 8))]
    return bytes(value)


@FUZZ
@given(mutated())
def test_mutated_valid_encodings(value: bytes) -> None:
    check_outcome(value)


# --- 3. validly encoded hostile records ---------------------------------------------

_FLOATS: Final = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]),
)
_LONGS: Final = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 2**31, 2**63 - 1, -(2**63)])
)


def from_avro(t: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of any shape the Avro type allows (the catalog's rules are not applied)."""
    if isinstance(t, list):
        return st.one_of(*(from_avro(branch, named) for branch in t))
    if isinstance(t, str):
        primitive = {
            "null": st.none(),
            "string": hostile_text,
            "double": _FLOATS,
            "long": _LONGS,
            "boolean": st.booleans(),
        }
        return primitive[t] if t in primitive else st.deferred(lambda: named[t])
    if t["type"] == "array":
        return st.lists(from_avro(t["items"], named), max_size=6)
    if t["type"] == "record":
        fields = {f["name"]: from_avro(f["type"], named) for f in t["fields"]}
        named[t["name"]] = st.fixed_dictionaries(fields)
        return named[t["name"]]
    if t.get("logicalType") == "timestamp-millis":
        # Any long: far outside any calendar as well as plausible times.
        return _LONGS
    return from_avro(t["type"], named)


_RECORD_STRATEGIES: Final = {key: from_avro(avro_schema(*key), {}) for key in editions()}


@FUZZ
@given(data=st.data(), key=st.sampled_from(editions()), confluent=st.booleans())
def test_validly_encoded_records_of_any_shape(
    data: st.DataObject, key: tuple[int, str], confluent: bool
) -> None:
    record = data.draw(_RECORD_STRATEGIES[key])
    check_outcome(encode(*key, record, confluent))


def _free_text_fields(record: dict[str, Any], signal_type: str) -> list[str]:
    spec = catalog.SIGNALS[signal_type]
    return [
        fs.name
        for fs in spec.fields
        if fs.kind is catalog.Kind.STRING and not fs.enum and not fs.format
    ]


@FUZZ
@given(data=st.data(), key=st.sampled_from(editions()))
def test_hostile_strings_reach_the_request_intact(
    data: st.DataObject, key: tuple[int, str]
) -> None:
    """Valid events whose free-text fields and ids are hostile: sent exactly as written."""
    edition, signal_type = key
    record = dict(sample_records()[key])
    schema_fields = {f["name"] for f in avro_schema(*key)["fields"]}
    names = [n for n in _free_text_fields(record, signal_type) if n in schema_fields]
    for name in ["sessionId", "eventId", *names]:
        record[name] = data.draw(hostile_text.filter(bool), label=name)
    identity = dict(record["identifiableAttributes"])
    identity["email"] = data.draw(hostile_text.filter(bool), label="email")
    record["identifiableAttributes"] = identity
    outcome = check_outcome(encode(edition, signal_type, record, confluent=False))
    if isinstance(outcome, Rejection):
        # Only a length rule may refuse free text.
        assert all("longer than" in p.rule for p in outcome.problems), outcome.message
        return
    assert isinstance(outcome, MappedSignal)
    content = outcome.signal["signalContent"]
    for name in names:
        assert content[name] == record[name]
    assert outcome.signal["sessionId"] == record["sessionId"]
    assert outcome.signal["identifiableAttributes"]["email"] == identity["email"]
    check_signal(outcome.signal, graphql_too=True)


# --- 4. targeted cases ----------------------------------------------------------------


def _order_with_marker(marker: str) -> bytes:
    record = {**sample_records()[(2, "order")], "orderId": marker}
    return encode(2, "order", record, confluent=False)


@pytest.mark.parametrize(
    "replacement",
    [b"\xff\xfe\xfd\xfc", b"\xed\xa0\x80Q", b"\xc0\xafQQ", b"Q\xf4\x90\x80"],
    ids=["bytes-ff", "surrogate", "overlong", "beyond-unicode"],
)
def test_invalid_utf8_is_undecodable(replacement: bytes) -> None:
    value = _order_with_marker("QQQQ")
    at = value.index(b"QQQQ")
    outcome = check_outcome(value[:at] + replacement + value[at + 4 :])
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.UNDECODABLE
    assert outcome.message.endswith("a string is not valid UTF-8")


def _length_claims() -> list[tuple[str, bytes]]:
    """Truncated values whose next length or count claims 2^31 (or more) elements."""
    value = _order_with_marker("QQQQ")
    at = value.index(b"QQQQ") - 1  # the string's length byte (zig-zag 4 = 0x08)
    assert value[at] == 0x08
    cases = [
        (f"string-{n}", value[:at] + zigzag_varint(n) + b"QQ") for n in (2**31, 2**62, -(2**31))
    ]
    with_items = encode(2, "order", sample_records()[(2, "order")], confluent=False)
    without = encode(
        2, "order", {**sample_records()[(2, "order")], "orderedItems": None}, confluent=False
    )
    branch = next(i for i, (a, b) in enumerate(zip(with_items, without, strict=False)) if a != b)
    for n in (2**31, -(2**31), 2**62):  # negative: a block count followed by a byte size
        cases.append((f"array-{n}", with_items[: branch + 1] + zigzag_varint(n) + b"\x02p"))
    return cases


@pytest.mark.parametrize(("name", "value"), _length_claims(), ids=[n for n, _ in _length_claims()])
def test_claimed_huge_lengths_allocate_nothing(name: str, value: bytes) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    outcome = check_outcome(value)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.UNDECODABLE, outcome
    assert peak < 5_000_000, f"{name}: {peak} bytes allocated"
    assert elapsed < 2.0, f"{name}: {elapsed:.1f}s"


def _many_items_value(count: int) -> bytes:
    """An order whose orderedItems holds ``count`` copies of one item, encoded validly.

    Built from the bytes of a one-item encoding (one block of ``count`` items), so a
    million items cost no encoding time.
    """
    record = sample_records()[(2, "order")]
    item = {"productId": "p", "productName": "n", "unitPrice": 1.0}
    one = encode(2, "order", {**record, "orderedItems": [item]}, confluent=False)
    none = encode(2, "order", {**record, "orderedItems": None}, confluent=False)
    branch = next(i for i, (a, b) in enumerate(zip(one, none, strict=False)) if a != b)
    # one = head + branch(0x02) + count(0x02) + item + end(0x00) + tail
    tail_len = len(none) - branch - 1
    item_bytes = one[branch + 2 : len(one) - tail_len - 1]
    body = zigzag_varint(count) + item_bytes * count + b"\x00"
    return one[: branch + 1] + body + one[len(one) - tail_len :]


def test_many_items_encoding_is_what_fastavro_writes() -> None:
    record = sample_records()[(2, "order")]
    item = {"productId": "p", "productName": "n", "unitPrice": 1.0}
    direct = encode(2, "order", {**record, "orderedItems": [item] * 3}, confluent=False)
    assert _many_items_value(3) == direct


def test_a_million_items_is_refused_before_decoding() -> None:
    value = _many_items_value(1_000_000)
    tracemalloc.start()
    started = time.perf_counter()
    outcome = check_outcome(value)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.UNDECODABLE
    assert "exceeds the 1048576-byte limit" in outcome.message
    assert peak < 1_000_000 and elapsed < 0.5


def test_items_up_to_the_size_limit_stay_bounded() -> None:
    """The most items a value under the limit can hold: bounded time and memory."""
    value = _many_items_value(20_000)
    assert len(value) < 1024 * 1024
    tracemalloc.start()
    outcome = check_outcome(value)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(outcome, MappedSignal)
    assert outcome.signal["signalContent"]["orderedItems"] == [
        {"productId": "p", "productName": "n", "unitPrice": 1.0, "itemQuantity": 20_000}
    ]
    assert peak < 100_000_000, peak


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_rejected_by_field(number: float) -> None:
    record = {**sample_records()[(2, "order")], "orderValue": number}
    outcome = check_outcome(encode(2, "order", record, confluent=True))
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.VALIDATION
    assert outcome.field == "orderValue" and "finite" in outcome.message


def test_many_invalid_items_give_a_bounded_message() -> None:
    record = sample_records()[(2, "order")]
    items = [{"productId": "p", "productName": "", "unitPrice": 1.0}] * 5_000
    value = encode(2, "order", {**record, "orderedItems": items}, confluent=False)
    outcome = check_outcome(value)
    assert isinstance(outcome, Rejection)
    assert outcome.field == "orderedItems[0].productName"
    assert "more" in outcome.message


def test_huge_value_in_an_error_message_is_shortened() -> None:
    huge = "U" * 200_000
    record = {**sample_records()[(2, "order")], "currency": huge}
    outcome = check_outcome(encode(2, "order", record, confluent=False))
    assert isinstance(outcome, Rejection) and outcome.field == "currency"
    assert "is not an ISO 4217 code" in outcome.message


# --- 5. the regression corpus -----------------------------------------------------------

#: What each corpus entry must give: (reason, first field), or "signal".
EXPECTED: Final[dict[str, tuple[str, str] | str]] = {
    "avro-300-invalid-items.bin": ("validation", "orderedItems[0].productName"),
    "avro-huge-currency.bin": ("validation", "currency"),
    "avro-quantity-2p40.bin": ("validation", "orderedItems[0].itemQuantity"),
    "avro-merged-quantity-overflow.bin": "signal",
    "avro-invalid-utf8.bin": ("undecodable", ""),
    "avro-string-claims-2p31.bin": ("undecodable", ""),
    "avro-nan-order-value.bin": ("validation", "orderValue"),
}


def test_corpus_has_every_expected_entry() -> None:
    assert set(EXPECTED) <= {p.name for p in CORPUS.glob("*.bin")}


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.bin")), ids=lambda p: p.name)
def test_regression_corpus(path: Path) -> None:
    outcome = check_outcome(path.read_bytes())
    expected = EXPECTED.get(path.name)  # new crash files: the invariants only
    if expected == "signal":
        assert isinstance(outcome, MappedSignal)
        items = outcome.signal["signalContent"]["orderedItems"]
        assert [i["itemQuantity"] for i in items] == [2**31 - 1, 2**31 - 1]
    elif expected is not None:
        assert isinstance(outcome, Rejection)
        assert (str(outcome.reason), outcome.field) == expected, outcome.message[:200]
