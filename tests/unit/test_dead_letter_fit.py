"""A dead letter always fits: value, then key and large headers, then every source header go.

And headers the client cannot decode (names that are not UTF-8) never crash it.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, Message

from pipeline.kafka.dead_letters import (
    HEADERS_OMITTED_HEADER,
    KEY_OMITTED_HEADER,
    MAX_LEVEL,
    VALUE_OMITTED_HEADER,
    Source,
    dead_letter_record,
    header_pairs,
    header_value,
    record_bytes,
)
from pipeline.kafka.stops import is_refusal
from pipeline.signals.outcomes import Reason, Rejection

REJECTION = Rejection.single(Reason.UNDECODABLE, "", "not Avro")
LIMIT = 100_000


def _fits(record) -> bool:
    return record_bytes(record.key, record.value, record.headers) + 1_024 <= LIMIT


def test_a_small_dead_letter_keeps_everything():
    source = Source("clicks", 0, 5, None, b"k", b"v", (("trace", b"t"),))
    record = dead_letter_record(REJECTION, source, "g", 1, LIMIT)
    assert (record.key, record.value, record.level) == (b"k", b"v", 0)
    assert header_value(record.headers, "trace") == "t"
    assert header_value(record.headers, VALUE_OMITTED_HEADER) is None


def test_a_huge_key_goes_after_the_value_and_headers_say_so():
    source = Source("clicks", 0, 5, None, b"K" * 200_000, b"v" * 10, (("trace", b"t"),))
    record = dead_letter_record(REJECTION, source, "g", 1, LIMIT)
    assert _fits(record) and record.level == 2
    assert record.key is None and record.value is None
    assert header_value(record.headers, KEY_OMITTED_HEADER) == "200000"
    assert header_value(record.headers, VALUE_OMITTED_HEADER) == "10"
    assert header_value(record.headers, "trace") == "t"  # small headers stay
    assert header_value(record.headers, "__connect.errors.offset") == "5"


def test_huge_headers_go_small_ones_stay_then_all_go():
    big = tuple((f"big{i}", b"x" * 60_000) for i in range(3))
    source = Source("clicks", 1, 9, None, b"k", b"v", (("small", b"s"), *big))
    record = dead_letter_record(REJECTION, source, "g", 1, LIMIT)
    assert _fits(record) and record.level == 2
    assert header_value(record.headers, "small") == "s"
    assert header_value(record.headers, "big0") is None
    assert header_value(record.headers, HEADERS_OMITTED_HEADER) == (
        "3 of 4 omitted (too large to dead-letter)"
    )
    many = tuple((f"h{i}", b"y" * 900) for i in range(200))  # each small, together too big
    record = dead_letter_record(REJECTION, Source("c", 0, 1, None, None, None, many), "g", 1, LIMIT)
    assert _fits(record) and record.level == MAX_LEVEL
    assert header_value(record.headers, "h0") is None
    assert header_value(record.headers, "connect.signals.reason") == "undecodable"


def test_a_refusal_as_too_large_asks_one_level_up():
    source = Source("clicks", 0, 5, None, b"k", b"v", ())
    assert dead_letter_record(REJECTION, source, "g", 1, LIMIT, level=1).value is None
    again = dead_letter_record(REJECTION, source, "g", 1, LIMIT, level=2)
    assert again.key is None and header_value(again.headers, KEY_OMITTED_HEADER) == "1"


class _UndecodableHeaders:
    """What the client does with a header name that is not UTF-8: raise on headers()."""

    def headers(self):
        raise UnicodeDecodeError("utf-8", b"\xff\xfe", 0, 1, "invalid start byte")


def test_headers_that_are_not_utf8_are_left_out_saying_why():
    pairs, why = header_pairs(_UndecodableHeaders())
    assert pairs == [] and "not UTF-8" in why
    source = Source("clicks", 0, 5, None, b"k", b"v", (), why)
    record = dead_letter_record(REJECTION, source, "g", 1, LIMIT)
    assert record.value == b"v"
    assert "not UTF-8" in (header_value(record.headers, HEADERS_OMITTED_HEADER) or "")


def test_header_values_that_are_not_utf8_stay_bytes():
    message = Message(topic="t", partition=0, offset=1, headers=[("k", b"\xff\xfe"), ("n", None)])
    pairs, why = header_pairs(message)
    assert pairs == [("k", b"\xff\xfe"), ("n", b"")] and why == ""
    assert header_value(pairs, "k") == "\ufffd\ufffd"


def test_refusals_are_the_topic_s_not_transient_errors():
    assert is_refusal(KafkaError(KafkaError.TOPIC_EXCEPTION))
    assert is_refusal(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert is_refusal(KafkaError(KafkaError.INVALID_RECORD))
    assert not is_refusal(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert not is_refusal(KafkaError(KafkaError._PURGE_QUEUE))
    assert not is_refusal(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
