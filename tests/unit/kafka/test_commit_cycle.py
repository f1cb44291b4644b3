"""The commit cycle with stand-ins: only behind finished records, only current generations."""

from __future__ import annotations

from typing import Any

from pipeline.kafka.commit_cycle import CommitCycle
from pipeline.kafka.dead_letter_writer import DeadLetterWriter
from pipeline.kafka.partition_state import Partitions
from pipeline.kafka.producer_sink import ProducerSink
from pipeline.kafka.records import Bounds, RecordOrigin
from tests.unit.kafka.fakes import FakeConsumer, FakeProducer, pending


class FakeTransactions:
    def __init__(self, land: bool) -> None:
        self.land = land
        self.commits: list[list[Any]] = []
        self.aborts = 0

    def commit(self, offsets: list[Any]) -> bool:
        self.commits.append(offsets)
        return self.land

    def abort(self, reason: str) -> None:
        self.aborts += 1


def _cycle(transactions: FakeTransactions | None = None):
    consumer, producer = FakeConsumer(), FakeProducer()
    sink = ProducerSink(producer, transactional=transactions is not None)  # type: ignore[arg-type]
    partitions = Partitions()
    writer = DeadLetterWriter(
        sink,
        "dlq",
        "g",
        100_000,
        RecordOrigin(),
        finished=lambda p: None,
        counted=lambda r, n: None,
    )
    cycle = CommitCycle(consumer, sink, transactions, partitions, writer, None)  # type: ignore[arg-type]
    return cycle, consumer, sink, partitions


def test_plain_commits_the_first_unfinished_offset_once():
    cycle, consumer, _, partitions = _cycle()
    (state,) = partitions.assign([("t", 0)])
    records = [pending(state, n) for n in range(3)]
    state.finish(records[0].offset)
    state.finish(records[2].offset)
    assert cycle.commit(asynchronous=False)
    assert [(tp.partition, tp.offset) for tp in consumer.commits[0]] == [(0, 1)]
    assert cycle.commit(asynchronous=False)
    assert len(consumer.commits) == 1  # nothing moved: nothing sent


def test_a_retired_generation_gives_no_offset():
    cycle, consumer, _, partitions = _cycle()
    (state,) = partitions.assign([("t", 0)])
    record = pending(state, 0)
    partitions.retire([("t", 0)])
    state.finish(record.offset)
    assert cycle.commit(asynchronous=False)
    assert consumer.commits == []


def test_only_the_revoked_partitions_when_asked():
    cycle, consumer, _, partitions = _cycle()
    for state in partitions.assign([("t", 0), ("t", 1)]):
        state.finish(pending(state, 0).offset)
    cycle.commit(asynchronous=False, only={("t", 1)})
    assert [(tp.partition, tp.offset) for tp in consumer.commits[0]] == [(1, 1)]


def test_a_transaction_with_records_commits_them_with_the_offsets():
    transactions = FakeTransactions(land=True)
    cycle, consumer, sink, partitions = _cycle(transactions)
    (state,) = partitions.assign([("t", 0)])
    state.finish(pending(state, 0).offset)
    sink.dirty = True
    assert cycle.commit(asynchronous=True)
    assert [(tp.partition, tp.offset) for tp in transactions.commits[0]] == [(0, 1)]
    assert consumer.commits == [] and not sink.dirty
    assert cycle.last_committed == {("t", 0): 1}


def test_offsets_alone_go_in_one_offset_commit():
    transactions = FakeTransactions(land=True)
    cycle, consumer, _, partitions = _cycle(transactions)
    (state,) = partitions.assign([("t", 0)])
    state.finish(pending(state, 0).offset)
    assert cycle.commit(asynchronous=True)
    assert transactions.commits == [] and len(consumer.commits) == 1


def test_an_aborted_transaction_asks_for_a_rewind_from_the_last_commit():
    transactions = FakeTransactions(land=False)
    cycle, _, sink, partitions = _cycle(transactions)
    (state,) = partitions.assign([("t", 0)])
    state.finish(pending(state, 0).offset)
    sink.dirty = True
    cycle.last_committed[("t", 0)] = 0
    assert not cycle.commit(asynchronous=True)
    (position,) = cycle.positions([("t", 0)], None)
    assert position.offset == 0
    bounds = Bounds({("t", 1): 7}, {("t", 1): 9})
    (position,) = cycle.positions([("t", 1)], bounds)
    assert position.offset == 7
