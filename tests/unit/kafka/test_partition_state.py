from pipeline.kafka.partition_state import InFlight, Partitions
from tests.unit.kafka.fakes import pending


def test_a_new_assignment_is_a_new_generation_and_retires_the_old():
    partitions = Partitions()
    (first,) = partitions.assign([("t", 0)])
    record = pending(first, 5)
    partitions.retire([("t", 0)])
    (second,) = partitions.assign([("t", 0)])
    assert first.retired and not second.retired
    assert second.generation > first.generation
    second.offsets.track(5)
    record.state.finish(record.offset)  # the old generation's result arrives late
    assert second.offsets.committable() == 5  # never moves the new generation
    assert partitions.get(("t", 0)) is second


def test_a_rewind_renews_every_partition():
    partitions = Partitions()
    old = partitions.assign([("t", 0), ("t", 1)])
    partitions.renew()
    assert all(s.retired for s in old)
    assert all(not s.retired for s in partitions)
    assert sorted(partitions.keys()) == [("t", 0), ("t", 1)]


def test_unfinished_counts_current_generations_only():
    partitions = Partitions()
    (state,) = partitions.assign([("t", 0)])
    pending(state, 1)
    pending(state, 2)
    assert partitions.unfinished == 2
    partitions.retire([("t", 0)])
    assert partitions.unfinished == 0


def test_a_key_in_flight_makes_others_wait_and_settling_hands_them_back():
    partitions = Partitions()
    (state,) = partitions.assign([("t", 0)])
    flight = InFlight()
    first, again = pending(state, 1, key="k"), pending(state, 2, key="k")
    assert flight.claim("k")
    assert not flight.claim("k")
    flight.wait("k", (again, b"{}"))
    assert flight.settle("k") == [(again, b"{}")]
    assert "k" not in flight and flight.settle("k") is None
    assert flight.claim("k")  # free again
    assert first.key == "k"
