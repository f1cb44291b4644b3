from pipeline import __version__
from pipeline.kafka.dead_letters import Source, dead_letter_headers, header_value
from pipeline.signals.outcomes import Problem, Reason, Rejection


def test_headers_follow_kafka_connect_and_keep_the_source_headers():
    rejection = Rejection(
        Reason.VALIDATION,
        (Problem("orderedItems[1].unitPrice", "required"), Problem("currency", "bad")),
    )
    source = Source("clicks", 3, 42, 1_700_000_000_000, b"k", b"v", (("trace", b"t1"),))
    headers = dead_letter_headers(rejection, source, "grp")
    names = [k for k, _ in headers]
    assert names[0] == "trace"
    assert header_value(headers, "__connect.errors.topic") == "clicks"
    assert header_value(headers, "__connect.errors.partition") == "3"
    assert header_value(headers, "__connect.errors.offset") == "42"
    assert header_value(headers, "__connect.errors.stage") == "TRANSFORMATION"
    assert header_value(headers, "__connect.errors.exception.class.name") == "validation"
    assert header_value(headers, "__connect.errors.exception.message") == (
        "orderedItems[1].unitPrice: required; currency: bad"
    )
    assert header_value(headers, "connect.signals.field") == "orderedItems[1].unitPrice"
    assert header_value(headers, "connect.signals.timestamp") == "1700000000000"
    assert header_value(headers, "connect.signals.group") == "grp"
    assert header_value(headers, "connect.signals.pipeline.version") == __version__
    assert header_value(headers, "connect.signals.attempt") == "1"


def test_a_redriven_record_replaces_the_previous_error_headers():
    first = dead_letter_headers(
        Rejection.single(Reason.API_REJECTED, "", "old"), Source("t", 0, 1, None, None, b"v"), "g"
    )
    again = dead_letter_headers(
        Rejection.single(Reason.VALIDATION, "x", "new"),
        Source("t", 0, 1, None, None, b"v", tuple(first)),
        "g",
        attempt=2,
    )
    assert [v for k, v in again if k == "__connect.errors.exception.message"] == [b"x: new"]
    assert header_value(again, "connect.signals.attempt") == "2"
    assert header_value(again, "__connect.errors.stage") == "TRANSFORMATION"


def test_an_omitted_value_is_named_in_a_header_and_first_in_the_message():
    from pipeline.kafka.dead_letters import VALUE_OMITTED_HEADER, record_bytes

    rejection = Rejection(Reason.UNDECODABLE, (Problem("", "x" * 10_000),))
    source = Source("clicks", 0, 7, None, b"k", b"v" * 2_000_000)
    plain = dead_letter_headers(rejection, source, "grp")
    assert header_value(plain, VALUE_OMITTED_HEADER) is None
    assert record_bytes(source.key, source.value, plain) > 2_000_000
    headers = dead_letter_headers(rejection, source, "grp", omitted_value_bytes=2_000_000)
    assert header_value(headers, VALUE_OMITTED_HEADER) == "2000000"
    message = header_value(headers, "__connect.errors.exception.message") or ""
    assert message.startswith("value of 2000000 bytes omitted")
    assert len(message) == 4_096  # still truncated, the note kept
    assert record_bytes(source.key, None, headers) < 20_000
