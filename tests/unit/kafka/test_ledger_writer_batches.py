"""Format 3 on the write side: one record per delivered batch and source partition."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from pipeline.kafka.ledger_records import V3_MAX_ENTRIES, decode, topic_id
from pipeline.kafka.ledger_tail import LedgerTail
from pipeline.kafka.ledger_writer import LedgerWriter
from pipeline.kafka.producer_sink import ProducerSink
from tests.unit.kafka.fakes import FakeProducer


def _writer(
    transactional: bool, record_format: int = 3, backfill: bool = False
) -> tuple[LedgerWriter, FakeProducer, LedgerTail]:
    producer = FakeProducer()
    sink = ProducerSink(producer, transactional=transactional)  # type: ignore[arg-type]
    tail = LedgerTail(None, 4)  # type: ignore[arg-type]  # the loader is not used here
    tail.horizons.assigned("clicks", 1, 100)
    tail.horizons.assigned("clicks", 5, 0)
    writer = LedgerWriter(sink, tail, "ledger", backfill=backfill, record_format=record_format)
    return writer, producer, tail


ROWS = [(("clicks", 1, 120), "a"), (("clicks", 5, 7), "b"), (("clicks", 1, 110), "c")]


def _entries(call: dict[str, Any]) -> tuple[int, tuple[tuple[int, str], ...] | None]:
    record = decode(call["value"])
    assert record is not None
    return record.partition, record.entries


def test_one_record_per_source_partition_of_a_batch_in_a_transaction() -> None:
    writer, producer, _ = _writer(transactional=True)
    writer.write_batch(ROWS, 1_000)
    assert len(producer.calls) == 2
    by_partition = dict(_entries(call) for call in producer.calls)
    assert by_partition == {1: ((110, "c"), (120, "a")), 5: ((7, "b"),)}
    assert {c["partition"] for c in producer.calls} == {1}  # 1 % 4 and 5 % 4
    assert all(c["key"].startswith(b"b3-") for c in producer.calls)
    first = decode(producer.calls[0]["value"])
    assert first is not None and first.topic == topic_id("clicks") and first.horizon == 121


def test_an_abort_writes_the_open_batches_again_with_fresh_horizons() -> None:
    writer, producer, tail = _writer(transactional=True)
    writer.write_batch(ROWS[:1], 1_000)
    writer.write_batch([(("clicks", 1, 200), "d")], 1_001)
    writer.rewrite()
    values = [decode(c["value"]) for c in producer.calls]
    assert [v.entries for v in values if v] == [
        ((120, "a"),),
        ((200, "d"),),
        ((120, "a"),),
        ((200, "d"),),
    ]
    # a horizon never goes down: the rewritten record of offset 120 bounds offset 200 too
    assert [v.horizon for v in values if v] == [121, 201, 201, 201]
    writer.committed()
    writer.rewrite()
    assert len(producer.calls) == 4
    assert tail.horizons.next("clicks", 1, 0) == 201


def test_plain_mode_finishes_each_signal_when_its_record_is_acked_and_retries() -> None:
    writer, producer, _ = _writer(transactional=False)
    acked: list[str] = []
    writer.write_batch(ROWS, 1_000, [lambda k=key: acked.append(k) for _, key in ROWS])  # type: ignore[misc]
    calls = {_entries(c)[0]: c for c in producer.calls}
    calls[5]["on_delivery"](None, None)
    assert acked == ["b"]
    calls[1]["on_delivery"](KafkaError(KafkaError._MSG_TIMED_OUT), None)
    assert acked == ["b"] and len(producer.calls) == 3  # written again
    producer.calls[2]["on_delivery"](None, None)
    assert sorted(acked) == ["a", "b", "c"]


def test_format_2_and_keys_format_3_cannot_hold_go_one_record_a_signal() -> None:
    writer, producer, _ = _writer(transactional=True, record_format=2)
    writer.write_batch(ROWS, 1_000)
    assert [c["key"] for c in producer.calls] == [b"a", b"b", b"c"]
    assert all(len(c["value"]) == 29 for c in producer.calls)
    writer, producer, _ = _writer(transactional=True)
    writer.write_batch([(("clicks", 1, 120), "é" * 3)], 1_000)  # not ASCII: format 2
    assert [c["key"] for c in producer.calls] == [("é" * 3).encode()]


def test_a_backfill_batch_record_has_no_horizon() -> None:
    writer, producer, _ = _writer(transactional=True, backfill=True)
    writer.write_batch(ROWS, 1_000)
    assert all(
        r is not None and r.horizon is None
        for r in map(decode, (c["value"] for c in producer.calls))
    )


def test_grouped_sources_write_what_rows_write_and_again_after_an_abort() -> None:
    by_rows, rows_producer, _ = _writer(transactional=True)
    by_sources, sources_producer, _ = _writer(transactional=True)
    by_rows.write_batch(ROWS, 1_000)
    by_sources.write_sources(
        [("clicks", 1, [120, 110], ["a", "c"]), ("clicks", 5, [7], ["b"])], 1_000
    )
    assert [c["value"] for c in sources_producer.calls] == [c["value"] for c in rows_producer.calls]
    by_sources.rewrite()  # the transaction aborted: the same entries again
    again = [_entries(c) for c in sources_producer.calls[2:]]
    assert again == [_entries(c) for c in sources_producer.calls[:2]]
    by_sources.committed()
    by_sources.rewrite()
    assert len(sources_producer.calls) == 4


def test_grouped_sources_in_format_2_write_one_record_a_signal() -> None:
    writer, producer, _ = _writer(transactional=True, record_format=2)
    writer.write_sources([("clicks", 1, [120, 110], ["a", "c"])], 1_000)
    assert [c["key"] for c in producer.calls] == [b"a", b"c"]


def test_plain_mode_sources_run_one_callback_a_source_once_all_its_records_are_acked() -> None:
    writer, producer, _ = _writer(transactional=False)
    acked: list[int] = []
    over = list(range(V3_MAX_ENTRIES + 1))  # two records for one source
    writer.write_sources(
        [
            ("clicks", 1, over, [f"k{i}" for i in over]),
            ("clicks", 5, [7, 8], ["é", "b"]),  # not ASCII: one format-2 record each
        ],
        1_000,
        [lambda: acked.append(1), lambda: acked.append(5)],
    )
    assert len(producer.calls) == 4 and not acked
    producer.calls[0]["on_delivery"](None, None)
    producer.calls[2]["on_delivery"](KafkaError(KafkaError._MSG_TIMED_OUT), None)
    assert not acked and len(producer.calls) == 5  # written again, still one callback due
    producer.calls[1]["on_delivery"](None, None)
    assert acked == [1]
    producer.calls[3]["on_delivery"](None, None)
    assert acked == [1]
    producer.calls[4]["on_delivery"](None, None)
    assert acked == [1, 5]
