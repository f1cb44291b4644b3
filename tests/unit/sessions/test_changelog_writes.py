"""The changelog's records through the consumer's producer: positional calls, one list
per partition, and a full queue or a refused record handled as any produce."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from pipeline.config import Settings
from pipeline.kafka.producer_sink import ProducerSink
from pipeline.kafka.session_hooks import SessionHooks
from tests.unit.sessions.script import add, mapped, options


class FakeProducer:
    """Records calls; the attempt numbered in ``failures`` (from 0) raises instead."""

    def __init__(self, failures: dict[int, Exception] | None = None) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.failures = failures or {}
        self.attempts = 0
        self.polls = 0

    def produce(self, *args: Any, **kwargs: Any) -> None:
        failure = self.failures.get(self.attempts)
        self.attempts += 1
        if failure is not None:
            raise failure
        self.calls.append((args, kwargs))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


def sent(producer: FakeProducer) -> list[tuple[str, int, bytes, bytes | None]]:
    """(topic, partition, key, value) of each call, positional or keyword."""
    out = []
    for args, kwargs in producer.calls:
        if kwargs:
            out.append((args[0], kwargs["partition"], kwargs["key"], kwargs["value"]))
        else:
            topic, value, key, partition, *_ = args
            out.append((topic, partition, key, value))
    return out


RECORDS = [(b"k1", b"v1"), (b"k2", None), (b"k3", b"v3")]


def test_records_go_positionally_in_order_and_mark_the_sink_dirty() -> None:
    producer = FakeProducer()
    sink = ProducerSink(producer, transactional=True)  # type: ignore[arg-type]
    sink.produce_records("log", 3, [])
    assert producer.calls == [] and not sink.dirty  # nothing: nothing to commit
    sink.produce_records("log", 3, RECORDS)
    assert all(not kwargs for _, kwargs in producer.calls)
    assert sent(producer) == [("log", 3, k, v) for k, v in RECORDS]
    assert sink.dirty


def test_outside_a_transaction_each_record_carries_the_delivery_callback() -> None:
    producer = FakeProducer({1: BufferError("queue full")})
    sink = ProducerSink(producer, transactional=False)  # type: ignore[arg-type]

    def told(error: KafkaError | None, message: Message) -> None:
        pass

    sink.produce_records("log", 2, RECORDS, told)
    callbacks = [
        args[4] if len(args) > 4 else kwargs["on_delivery"] for args, kwargs in producer.calls
    ]
    assert callbacks == [told] * len(RECORDS)  # the one sent again after a full queue too


def test_a_full_queue_waits_and_the_record_still_goes_once() -> None:
    producer = FakeProducer({1: BufferError("queue full")})
    sink = ProducerSink(producer, transactional=True)  # type: ignore[arg-type]
    sink.produce_records("log", 0, RECORDS)
    assert producer.polls == 1
    assert sent(producer) == [("log", 0, k, v) for k, v in RECORDS]


def test_a_refused_record_in_a_transaction_asks_for_an_abort() -> None:
    refused = KafkaException(KafkaError(KafkaError._STATE, "not in a transaction"))
    producer = FakeProducer({0: refused})
    sink = ProducerSink(producer, transactional=True)  # type: ignore[arg-type]
    sink.produce_records("log", 0, RECORDS)
    assert sink.abort_requested
    assert [k for _, _, k, _ in sent(producer)] == [b"k2", b"k3"]


def test_a_record_too_large_raises_as_produce_does() -> None:
    large = KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
    producer = FakeProducer({0: large})
    sink = ProducerSink(producer, transactional=True)  # type: ignore[arg-type]
    with pytest.raises(KafkaException):
        sink.produce_records("log", 0, RECORDS)


def _hooks_with_a_change() -> SessionHooks:
    hooks = SessionHooks(Settings(topics=["clicks"]), options())
    hooks.stage.assign(("clicks", 0), [])
    message = Message(topic="clicks", partition=0, offset=0, key=b"s1", value=b"")
    hooks.observe(message, mapped(add("s1", 0, "A")))
    return hooks


def test_the_hooks_write_through_the_sink_when_given_its_produce() -> None:
    producer = FakeProducer()
    sink = ProducerSink(producer, transactional=True)  # type: ignore[arg-type]
    assert _hooks_with_a_change().write(sink.produce) == 2  # the session and the clock
    assert [len(args) for args, _ in producer.calls] == [4, 4]  # positional: the list path
    assert _hooks_with_a_change().write(sink) == 2


def test_the_hooks_write_through_any_callable() -> None:
    calls: list[dict[str, Any]] = []
    written = _hooks_with_a_change().write(lambda topic, **kwargs: calls.append(kwargs))
    assert written == 2 and {c["partition"] for c in calls} == {0}
