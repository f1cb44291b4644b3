import json

from pipeline.connect.client import batch_body
from pipeline.kafka.batcher import ENVELOPE_BYTES, Batcher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_closes_on_count():
    batcher = Batcher(max_signals=3, max_bytes=10_000, linger_s=1.0, clock=Clock())
    for n in range(7):
        batcher.add(f"k{n}", b"{}", n)
    assert [b.refs for b in batcher.ready] == [[0, 1, 2], [3, 4, 5]]
    assert batcher.open


def test_closes_before_the_bytes_overflow():
    batcher = Batcher(max_signals=100, max_bytes=ENVELOPE_BYTES + 25, linger_s=1.0, clock=Clock())
    for n in range(3):
        batcher.add(f"k{n}", b"x" * 10, n)  # 11 bytes each with its comma
    assert [b.refs for b in batcher.ready] == [[0, 1]]
    assert batcher.fits(b"x" * 24) and not batcher.fits(b"x" * 25)


def test_closes_after_linger_and_clear_hands_everything_back():
    clock = Clock()
    batcher = Batcher(max_signals=100, max_bytes=10_000, linger_s=0.05, clock=clock)
    batcher.add("a", b"{}", 1)
    batcher.close_if_due()
    assert not batcher.ready
    clock.now = 0.06
    batcher.close_if_due()
    assert [b.keys for b in batcher.ready] == [["a"]]
    batcher.add("b", b"{}", 2)
    assert [b.keys for b in batcher.clear()] == [["a"], ["b"]]
    assert batcher.empty


def test_the_envelope_constant_covers_the_request_around_the_signals():
    assert len(batch_body([])) <= ENVELOPE_BYTES
    fragments = [json.dumps({"n": n}).encode() for n in range(3)]
    body = batch_body(fragments)
    assert len(body) <= ENVELOPE_BYTES + sum(len(f) + 1 for f in fragments)


def test_the_body_holds_every_signal_in_order_whatever_the_count():
    for count in (0, 1, 2, 3, 500):
        fragments = [json.dumps({"n": n}).encode() for n in range(count)]
        body = json.loads(batch_body(fragments))
        assert body["variables"]["signals"] == [{"n": n} for n in range(count)]
        assert body["operationName"] == "CreateSignals" and "createSignals" in body["query"]


def test_due_in_is_the_time_left_of_the_open_batch():
    clock = Clock()
    batcher = Batcher(max_signals=100, max_bytes=10_000, linger_s=0.05, clock=clock)
    assert batcher.due_in() is None
    clock.now = 1.0
    batcher.add("a", b"{}", 1)
    clock.now = 1.02
    batcher.add("b", b"{}", 2)  # a later signal does not move the deadline
    assert abs((batcher.due_in() or 0) - 0.03) < 1e-9
    clock.now = 1.07
    assert (batcher.due_in() or 0) < 0
    batcher.close_if_due()
    assert batcher.due_in() is None


def test_add_many_closes_batches_as_add_does() -> None:
    clock = Clock()
    one, many = (Batcher(max_signals=3, max_bytes=10_000, linger_s=1.0, clock=clock) for _ in "ab")
    keys = [f"k{n}" for n in range(8)]
    for n, key in enumerate(keys):
        one.add(key, b"{}", n)
    many.add_many(keys[:1], [b"{}"], [0])  # a batch already open
    many.add_many(keys[1:], [b"{}"] * 7, list(range(1, 8)))
    assert [b.refs for b in many.ready] == [b.refs for b in one.ready] == [[0, 1, 2], [3, 4, 5]]
    assert many.due_in() == one.due_in() == 1.0
    many.close()
    assert many.ready[-1].keys == ["k6", "k7"]


def test_add_many_goes_one_by_one_where_the_bytes_limit_closes_a_batch() -> None:
    clock = Clock()
    one, many = (
        Batcher(max_signals=100, max_bytes=ENVELOPE_BYTES + 25, linger_s=1.0, clock=clock)
        for _ in "ab"
    )
    fragments = [b"x" * 10, b"x" * 10, b"x" * 10, b"x" * 3]
    for n, fragment in enumerate(fragments):
        one.add(f"k{n}", fragment, n)
    many.add_many([f"k{n}" for n in range(4)], fragments, [0, 1, 2, 3])
    assert [b.refs for b in many.ready] == [b.refs for b in one.ready] == [[0, 1]]
    one.close()
    many.close()
    assert many.ready[-1].refs == one.ready[-1].refs == [2, 3]
    assert many.ready[-1].body_bytes == one.ready[-1].body_bytes
