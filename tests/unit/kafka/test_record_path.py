"""The consumer's record path for one consume(): each record processed, tracked, checked
against the ledger, claimed and encoded in one loop, the partition looked up once per run
of its records, the batch's signals batched at once."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from pipeline.codec.avro import SchemaRegistryUnavailable
from pipeline.config import Settings
from pipeline.kafka.consumer import SignalConsumer
from pipeline.signals.mapping import MappedSignal
from pipeline.signals.outcomes import Reason, Rejection
from pipeline.signals.processor import Dropped
from tests.unit.kafka.fakes import FakeConsumer, FakeProducer


class Processor:
    """value -> its outcome; b"down" raises as an unreachable registry does."""

    def __init__(self, outcomes: dict[bytes, Any]) -> None:
        self.outcomes = outcomes
        self.seen: list[bytes] = []

    def process(self, value: bytes, headers: object = None) -> Any:
        self.seen.append(value)
        if value == b"down":
            raise SchemaRegistryUnavailable(7, "down")
        return self.outcomes[value]


class Client:
    on_answer = None

    def deliver(self, batch: Any) -> Any:
        raise AssertionError("nothing is dispatched here")


def _message(partition: int, offset: int, value: bytes) -> Message:
    return Message(topic="clicks", partition=partition, offset=offset, key=b"k", value=value)


def _signal(key: str) -> MappedSignal:
    return MappedSignal("addToCart", key, {"id": key})


def _consumer(outcomes: dict[bytes, Any], **settings: Any) -> tuple[SignalConsumer, Processor]:
    processor = Processor(outcomes)
    consumer = SignalConsumer(
        Settings(topics=["clicks"], **settings),
        processor,  # type: ignore[arg-type]
        clients=(FakeConsumer(), FakeProducer(), Client()),  # type: ignore[arg-type]
    )
    consumer._partitions.assign([("clicks", 0), ("clicks", 1)])
    return consumer, processor


def test_a_consumed_batch_is_tracked_checked_against_the_ledger_and_batched_in_order() -> None:
    outcomes: dict[bytes, Any] = {
        b"a": _signal("ka"),
        b"b": _signal("kb"),
        b"old": _signal("k-delivered"),
        b"twice": _signal("ka"),  # the same key as a, still on its way: waits for it
        b"bad": Rejection.single(Reason.VALIDATION, "name", "required"),
        b"drop": Dropped("addToCart", "out_of_tier"),
    }
    consumer, _ = _consumer(outcomes)
    consumer.ledger.add("k-delivered", consumer.ledger.cutoff_ms() + 60_000)
    messages = [
        _message(0, 10, b"a"),
        _message(1, 5, b"b"),
        _message(0, 11, b"old"),
        _message(0, 12, b"twice"),
        _message(1, 6, b"drop"),
        _message(0, 13, b"bad"),
        _message(5, 1, b"a"),  # a partition not assigned here: ignored
    ]
    assert consumer._handle(messages)
    consumer._batcher.close()
    (batch,) = consumer._batcher.ready
    assert batch.keys == ["ka", "kb"] and batch.fragments == [b'{"id":"ka"}', b'{"id":"kb"}']
    assert consumer.summary.consumed == 6 and consumer.summary.skipped == 1
    assert consumer._in_flight.settle("ka") is not None  # "twice" waits on it
    first, second = (consumer._partitions.get(("clicks", p)) for p in (0, 1))
    assert first is not None and second is not None
    # 11 (skipped) and 13 (dead-lettered in the transaction) finished; 10 and 12 not
    assert first.offsets.committable() == 10 and first.offsets.pending == 2
    assert second.offsets.committable() == 5 and second.offsets.pending == 1  # 6 dropped
    # what a, b and twice hold (value and key bytes), and the batched signals' JSON
    held = sum(len(value) + len(b"k") for value in (b"a", b"b", b"twice"))
    assert consumer.buffered_bytes == held + len(b'{"id":"ka"}') + len(b'{"id":"kb"}')


def test_a_registry_outage_holds_its_partition_for_the_rest_of_the_batch_only() -> None:
    outcomes = {v: _signal(v.decode()) for v in (b"a", b"b", b"c", b"d", b"e")}
    consumer, processor = _consumer(outcomes)
    messages = [
        _message(0, 1, b"a"),
        _message(0, 2, b"down"),
        _message(0, 3, b"b"),  # after the hold: read again later, not now
        _message(1, 1, b"c"),
        _message(0, 4, b"d"),  # the partition comes back in the batch: still held
        _message(1, 2, b"e"),
    ]
    consumer._handle(messages)
    assert processor.seen == [b"a", b"down", b"c", b"e"]
    assert ("clicks", 0) in consumer._flow.held
    consumer._batcher.close()
    assert [k for b in consumer._batcher.ready for k in b.keys] == ["a", "c", "e"]
    assert consumer.summary.consumed == 3


def test_with_the_ledger_off_every_signal_is_batched_and_none_waits() -> None:
    consumer, _ = _consumer({b"a": _signal("k"), b"b": _signal("k")}, ledger_enabled=False)
    consumer._handle([_message(0, 1, b"a"), _message(0, 2, b"b")])
    consumer._batcher.close()
    assert [b.keys for b in consumer._batcher.ready] == [["k", "k"]]
