"""The deadlines' FIFO-plus-heap gives what one heap of (deadline, sequence, key) gives."""

from __future__ import annotations

import heapq
import random

from pipeline.sessions.deadlines import NEVER, Deadlines


def test_pops_in_the_order_of_one_heap_with_ties_by_push_order() -> None:
    rng = random.Random(7)
    due, heap, seq = Deadlines(), [], 0
    clock = 0
    popped, expected = [], []
    for _ in range(20_000):
        if rng.random() < 0.55:
            clock += rng.choice((0, 0, 1, 3))  # mostly in order, with ties
            deadline = clock - (rng.randrange(50) if rng.random() < 0.1 else 0)  # some late
            key = ("app", f"s{seq}")
            due.push(deadline, key)
            heapq.heappush(heap, (deadline, seq, key))
            seq += 1
        elif heap:
            assert due.next == heap[0][0]
            popped.append(due.pop()[::2])
            expected.append(heapq.heappop(heap)[::2])
        assert len(due) == len(heap)
    assert popped == expected and len(popped) > 5_000
    while heap:
        assert due.pop()[::2] == heapq.heappop(heap)[::2]
    assert due.next == NEVER and len(due) == 0


def test_an_entry_put_back_and_a_replaced_set() -> None:
    due = Deadlines()
    for deadline, name in ((5, "a"), (7, "b"), (9, "c")):
        due.push(deadline, ("app", name))
    first = due.pop()
    assert first[0] == 5 and due.next == 7
    due.push_entry(first)
    assert due.next == 5 and due.pop() == first
    due.replace([(3, ("app", "z")), (1, ("app", "y"))])
    assert len(due) == 2 and due.next == 1
    assert [due.pop()[2][1] for _ in range(2)] == ["y", "z"]
    assert due.next == NEVER
