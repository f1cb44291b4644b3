"""The ledger writer with a stand-in producer and tail: acks, retries, transactions."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from pipeline.kafka.ledger_writer import LedgerWriter
from pipeline.kafka.producer_sink import ProducerSink
from tests.unit.kafka.fakes import FakeProducer


class FakeTail:
    def partition(self, source_partition: int) -> int:
        return source_partition % 2

    def value(self, accepted_ms: int, topic: str, partition: int, offset: int, **kw: Any) -> bytes:
        return f"{accepted_ms}:{topic}:{partition}:{offset}:{kw.get('backfill')}".encode()


def _writer(transactional: bool, backfill: bool = False) -> tuple[LedgerWriter, FakeProducer]:
    producer = FakeProducer()
    sink = ProducerSink(producer, transactional=transactional)  # type: ignore[arg-type]
    return LedgerWriter(sink, FakeTail(), "ledger", backfill=backfill), producer  # type: ignore[arg-type]


def test_plain_acks_then_finishes_and_a_failure_writes_again():
    writer, producer = _writer(transactional=False)
    acked: list[int] = []
    writer.write(("clicks", 3, 41), "key", 1_000, lambda: acked.append(1))
    (call,) = producer.calls
    assert call["partition"] == 1 and call["key"] == b"key"
    assert call["value"] == b"1000:clicks:3:41:False"
    call["on_delivery"](KafkaError(KafkaError._MSG_TIMED_OUT), None)
    assert not acked and len(producer.calls) == 2
    producer.calls[1]["on_delivery"](None, None)
    assert acked == [1]


def test_a_transaction_remembers_its_records_and_rewrites_them_after_an_abort():
    writer, producer = _writer(transactional=True, backfill=True)
    writer.write(("clicks", 0, 1), "a", 5, None)
    writer.write(("clicks", 0, 2), "b", 6, None)
    assert producer.calls[0]["value"].endswith(b":True")  # a replay: no horizon
    writer.rewrite()
    assert [c["key"] for c in producer.calls] == [b"a", b"b", b"a", b"b"]
    writer.committed()
    writer.rewrite()
    assert len(producer.calls) == 4  # committed: nothing left to write again
