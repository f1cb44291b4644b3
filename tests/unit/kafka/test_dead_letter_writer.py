"""The dead-letter writer with a stand-in producer: sizes, refusals, retries, counting."""

from __future__ import annotations

from collections import Counter

import pytest
from confluent_kafka import KafkaError

from pipeline.kafka.dead_letter_writer import DeadLetterWriter
from pipeline.kafka.dead_letters import VALUE_OMITTED_HEADER, DeadLetterUnwritable, header_value
from pipeline.kafka.partition_state import Partitions
from pipeline.kafka.producer_sink import ProducerSink
from pipeline.kafka.records import Pending, RecordOrigin
from pipeline.signals.outcomes import Reason, Rejection
from tests.unit.kafka.fakes import FakeProducer, pending

REJECTION = Rejection.single(Reason.UNDECODABLE, "", "not Avro")


class Harness:
    def __init__(self, producer: FakeProducer, transactional: bool) -> None:
        self.producer = producer
        self.finished: list[Pending] = []
        self.counted: Counter[str] = Counter()
        self.sink = ProducerSink(producer, transactional=transactional)  # type: ignore[arg-type]
        self.writer = DeadLetterWriter(
            self.sink,
            "dlq",
            "group",
            100_000,
            RecordOrigin(),
            finished=self.finished.append,
            counted=lambda reason, n: self.counted.update({reason: n}),
        )
        (self.state,) = Partitions().assign([("clicks", 0)])

    def write(self, value: bytes) -> Pending:
        record = pending(self.state, 41, value)
        self.writer.write(record, REJECTION)
        return record


def test_plain_finishes_and_counts_on_the_acknowledgement():
    h = Harness(FakeProducer(), transactional=False)
    record = h.write(b"v")
    assert not h.finished
    h.producer.calls[0]["on_delivery"](None, None)
    assert h.finished == [record] and h.counted == {"undecodable": 1}


def test_a_transient_failure_writes_it_again():
    h = Harness(FakeProducer(), transactional=False)
    h.write(b"v")
    h.producer.calls[0]["on_delivery"](KafkaError(KafkaError._MSG_TIMED_OUT), None)
    h.writer.retry_failed()
    assert len(h.producer.calls) == 2 and not h.finished


@pytest.mark.parametrize("transactional", [True, False])
def test_a_refusal_by_the_topic_stops_the_consumer(transactional):
    h = Harness(FakeProducer(), transactional=transactional)
    h.write(b"v")
    with pytest.raises(DeadLetterUnwritable, match=r"'dlq' refused a record.*clicks\[0\]@41"):
        h.producer.calls[0]["on_delivery"](KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), None)
    assert h.sink.fatal and not h.counted


def test_a_refusal_at_produce_stops_the_consumer():
    h = Harness(FakeProducer(refuse=1, error=KafkaError._UNKNOWN_TOPIC), transactional=False)
    with pytest.raises(DeadLetterUnwritable):
        h.write(b"v")


@pytest.mark.parametrize("transactional", [True, False])
def test_too_large_in_the_report_goes_again_without_the_value(transactional):
    h = Harness(FakeProducer(), transactional=transactional)
    h.write(b"x" * 10_000)
    h.producer.calls[0]["on_delivery"](KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    if transactional:  # the commit aborts and the record is read again
        h.writer.aborted()
        h.write(b"x" * 10_000)
    else:
        h.writer.retry_failed()
    again = h.producer.calls[1]
    assert again["value"] is None and again["key"] == b"k"
    assert header_value(again["headers"], VALUE_OMITTED_HEADER) == "10000"
    assert header_value(again["headers"], "h") == "v"
    again["on_delivery"](None, None)
    h.writer.committed()
    assert h.counted == {"undecodable": 1}
    assert not h.writer.levels  # forgotten once written


def test_too_large_at_produce_goes_at_once_without_the_value():
    h = Harness(FakeProducer(refuse=1), transactional=False)
    h.write(b"z" * 500)
    (call,) = h.producer.calls
    assert call["value"] is None
    assert header_value(call["headers"], VALUE_OMITTED_HEADER) == "500"


def test_transactional_finishes_at_once_and_counts_at_the_commit():
    h = Harness(FakeProducer(), transactional=True)
    record = h.write(b"v")
    assert h.finished == [record] and not h.counted
    h.writer.committed()
    assert h.counted == {"undecodable": 1}
    h.write(b"v")
    h.writer.aborted()  # void: read and written again
    h.writer.committed()
    assert h.counted == {"undecodable": 1}


def test_a_retired_generation_is_not_counted_twice():
    h = Harness(FakeProducer(), transactional=False)
    record = h.write(b"v")
    record.state.retired = True  # revoked meanwhile: its new owner dead-letters it
    h.producer.calls[0]["on_delivery"](None, None)
    assert not h.counted and h.finished == [record]  # its memory released all the same
