from pipeline.kafka.offsets import PartitionOffsets


def test_commit_stays_behind_the_first_unfinished_record():
    offsets = PartitionOffsets()
    assert offsets.committable() is None
    for o in (10, 11, 12, 13):
        offsets.track(o)
    offsets.finish(12)
    offsets.finish(11)
    assert offsets.committable() == 10
    offsets.finish(10)
    assert offsets.committable() == 13
    offsets.finish(13)
    assert offsets.committable() == 14
    assert offsets.pending == 0


def test_to_commit_reports_only_movement():
    offsets = PartitionOffsets()
    offsets.track(0)
    offsets.finish(0)
    assert offsets.to_commit() == 1
    offsets.committed = 1
    assert offsets.to_commit() is None
    offsets.track(1)
    assert offsets.to_commit() is None
    offsets.finish(1)
    assert offsets.to_commit() == 2


def test_gaps_in_offsets_are_fine():
    offsets = PartitionOffsets()
    for o in (5, 9, 20):  # compacted topics and transaction markers leave gaps
        offsets.track(o)
    offsets.finish(9)
    offsets.finish(5)
    assert offsets.committable() == 20
    assert offsets.pending == 1
