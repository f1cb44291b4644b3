"""LedgerTail's loads beside the loop: one worker, cancelled by revokes, and a retired
load's result never reaching a newer assignment (stand-in loader and consumer)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from pipeline.kafka.ledger_loader import LoadCancelled, LoadProgress, TailRequest
from pipeline.kafka.ledger_tail import LedgerTail


class GatedLoader:
    """Each load waits for ``release`` (or its cancellation), then answers ``highs``."""

    def __init__(self) -> None:
        self.progress = LoadProgress()
        self.release = threading.Event()
        self.started: list[list[tuple[str, int]]] = []
        self.cancelled = 0
        self.highs: dict[tuple[str, int], int | None] = {}

    def load_tails(
        self,
        requests: Iterable[TailRequest],
        ledger_partitions: int,
        *,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> dict[tuple[str, int], int | None]:
        requests = list(requests)
        self.started.append([(r.topic, r.partition) for r in requests])
        while not self.release.wait(0.01):
            if cancelled():
                self.cancelled += 1
                raise LoadCancelled("revoked")
        return {(r.topic, r.partition): self.highs.get((r.topic, r.partition), 0) for r in requests}


class StubConsumer:
    def __init__(self, committed: dict[tuple[str, int], int]) -> None:
        self._committed = committed

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self._committed.get((tp.topic, tp.partition), -1001)
            )
            for tp in partitions
        ]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, 777


def _wait(predicate: Callable[[], Any]) -> None:
    deadline = time.monotonic() + 5
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _tail() -> tuple[LedgerTail, GatedLoader]:
    loader = GatedLoader()
    return LedgerTail(loader, 4), loader  # type: ignore[arg-type]


def test_a_load_ends_on_the_worker_and_the_loop_starts_its_partitions() -> None:
    tail, loader = _tail()
    consumer: Any = StubConsumer({("t", 0): 40})
    keys = tail.start_loading(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])
    assert keys == [("t", 0), ("t", 1)]
    assert tail.waits(("t", 0)) and tail.load_state()[0] == 2  # not ready meanwhile
    assert tail.loaded(consumer) == [] and not tail.ended
    loader.highs = {("t", 0): 55, ("t", 1): None}
    loader.release.set()
    _wait(lambda: tail.ended)
    # committed 40; nothing committed: where the reset starts (earliest)
    assert tail.loaded(consumer) == [(("t", 0), 40), (("t", 1), OFFSET_BEGINNING)]
    assert tail.load_state()[0] == 0
    assert tail.horizons.next("t", 0, 0) == 55
    assert tail.horizons.next("t", 1, 0) == 777  # old-format tail: bounded by the source end
    tail.close()


def test_a_load_whose_partitions_are_all_revoked_is_cancelled() -> None:
    tail, loader = _tail()
    consumer: Any = StubConsumer({})
    tail.start_loading(consumer, [TopicPartition("t", 0)])
    _wait(lambda: loader.started)
    tail.cancel([("t", 0)])
    _wait(lambda: loader.cancelled == 1)
    assert not tail.ended and tail.loaded(consumer) == []
    assert tail.load_state()[0] == 0
    tail.close()


def test_a_partition_given_back_during_its_old_load_waits_for_its_new_one() -> None:
    tail, loader = _tail()
    committed = {("t", 0): 10, ("t", 1): 20}
    consumer: Any = StubConsumer(committed)
    tail.start_loading(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])
    _wait(lambda: loader.started)
    tail.cancel([("t", 1)])  # revoked: the load goes on for t[0]
    committed[("t", 1)] = 25  # its other owner committed meanwhile
    tail.start_loading(consumer, [TopicPartition("t", 1)])  # given back: a new load
    loader.highs = {("t", 0): 11, ("t", 1): 99}
    loader.release.set()
    ready: list[tuple[tuple[str, int], int]] = []

    def both() -> bool:
        ready.extend(tail.loaded(consumer))
        return len(ready) >= 2

    _wait(both)
    # t[1] starts once, from its second load: the first one's result for it is dropped
    assert sorted(ready) == [(("t", 0), 10), (("t", 1), 25)]
    assert loader.started == [[("t", 0), ("t", 1)], [("t", 1)]]
    assert loader.cancelled == 0
    tail.close()


def test_a_failed_load_raises_on_the_loop_thread() -> None:
    tail, loader = _tail()

    def fail(*_: Any, **__: Any) -> dict[tuple[str, int], int | None]:
        raise RuntimeError("ledger x[0]: no progress, not loaded")

    loader.load_tails = fail  # type: ignore[method-assign]
    consumer: Any = StubConsumer({})
    tail.start_loading(consumer, [TopicPartition("t", 0)])
    _wait(lambda: tail.ended)
    try:
        tail.loaded(consumer)
    except RuntimeError as error:
        assert "no progress" in str(error)
    else:
        raise AssertionError("the load's error was not raised")
    tail.close()
