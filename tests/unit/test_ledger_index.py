"""The ledger's in-memory index and its small pure helpers."""

from __future__ import annotations

import struct

from pipeline.config import Settings
from pipeline.kafka.ledger import (
    Horizons,
    LedgerIndex,
    LedgerRecord,
    decode,
    duplicate_bound,
    encode,
    ledger_partition,
    ledger_value,
    topic_id,
)

HOUR_MS = 3_600_000


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def settings(**values: object) -> Settings:
    return Settings(topics=["clicks"], **values)  # type: ignore[arg-type]


def test_keys_within_retention_are_remembered_and_older_ones_refused() -> None:
    clock = Clock(100 * HOUR_MS)
    index = LedgerIndex(max_keys=1_000, retention_ms=24 * HOUR_MS, clock=clock)
    assert index.add("evt-1", clock.ms - HOUR_MS)
    assert not index.add("evt-old", clock.ms - 25 * HOUR_MS)
    assert "evt-1" in index and "evt-old" not in index and "evt-2" not in index
    assert len(index) == 1


def test_expire_drops_keys_that_aged_out_oldest_first() -> None:
    clock = Clock(100 * HOUR_MS)
    index = LedgerIndex(max_keys=1_000, retention_ms=24 * HOUR_MS, clock=clock)
    index.add("a", clock.ms - 23 * HOUR_MS)
    index.add("b", clock.ms - 2 * HOUR_MS)
    index.add("c", clock.ms)
    clock.ms += 3 * HOUR_MS  # "a" and "b" are now 26 h and 5 h old
    assert index.expire() == 1
    assert "a" not in index and "b" in index and "c" in index
    assert index.expired == 1


def test_over_the_bound_the_oldest_keys_are_evicted_and_counted() -> None:
    clock = Clock(100 * HOUR_MS)
    index = LedgerIndex(max_keys=3, retention_ms=24 * HOUR_MS, clock=clock)
    for key in ("a", "b", "c"):
        index.add(key, clock.ms)
    index.add("a", clock.ms)  # seen again: a newer copy; the older one is evicted first
    index.add("d", clock.ms)
    assert len(index) == 3 and index.evicted == 2
    assert "b" not in index and all(k in index for k in "acd")


def test_a_key_added_again_outlives_its_older_copy() -> None:
    clock = Clock(100 * HOUR_MS)
    index = LedgerIndex(max_keys=1_000, retention_ms=24 * HOUR_MS, clock=clock)
    index.add("a", clock.ms - 23 * HOUR_MS)
    index.add("b", clock.ms - 23 * HOUR_MS)
    index.add("a", clock.ms)  # accepted again (a rewind writes its record again)
    clock.ms += 2 * HOUR_MS
    assert index.expire() == 2
    assert "a" in index and "b" not in index and len(index) == 1


def test_many_keys_no_false_negative_and_bounded() -> None:
    clock = Clock(100 * HOUR_MS)
    index = LedgerIndex(max_keys=50_000, retention_ms=24 * HOUR_MS, clock=clock)
    keys = [f"S{n:07d}-{n * 7919 % 16**6:06x}-{n % 97:04d}" for n in range(60_000)]
    for n, key in enumerate(keys):
        index.add(key, clock.ms - HOUR_MS + n)  # minutes advance as keys arrive
    assert len(index) <= 50_000 and index.evicted >= 10_000
    assert all(key in index for key in keys[-49_000:])
    assert not any(key in index for key in keys[:10_000])
    assert not any(f"never-{n}" in index for n in range(10_000))
    assert 42 not in index  # only str keys


def test_ledger_records_and_partitions() -> None:
    assert struct.unpack(">q", ledger_value(1_795_000_000_123)) == (1_795_000_000_123,)
    assert [ledger_partition(p, 4) for p in range(6)] == [0, 1, 2, 3, 0, 1]


def test_transactional_id_is_stable_per_replica() -> None:
    assert settings(group_id="g", group_instance_id="pod-1").replica_transactional_id() == "g-pod-1"
    assert settings(transactional_id="explicit").replica_transactional_id() == "explicit"
    host_default = settings(group_id="g").replica_transactional_id()
    assert host_default.startswith("g-") and host_default == (
        settings(group_id="g").replica_transactional_id()
    )


def test_duplicate_bound_is_the_batches_in_flight_plus_those_done_before_the_ledger_ack() -> None:
    s = settings(batch_max_signals=25, max_in_flight_batches=4)
    # calls slower than linger + ack: at most one more round completes meanwhile
    assert duplicate_bound(s, min_call_latency_s=0.3) == 25 * 4 * 2
    # 5 ms calls: (5 ms linger + 20 ms ack) / 5 ms = five more rounds
    assert duplicate_bound(s, min_call_latency_s=0.005) == 25 * 4 * (1 + 5)
    assert duplicate_bound(s, min_call_latency_s=0.005, ledger_ack_s=0.005) == 25 * 4 * 3
    assert duplicate_bound(s) == 25 * 4 * 2


# --- the record format: source, horizon, and the old format still understood -----------


def test_a_format_2_record_names_its_source_and_horizon() -> None:
    tid = topic_id("clicks")
    value = encode(1_795_000_000_123, tid, 3, 41_000, 41_250)
    assert len(value) == 29
    record = decode(value)
    assert record == LedgerRecord(1_795_000_000_123, tid, 3, 41_000, 41_250)
    # a reader committed at or past the horizon may stop there; one before may not
    assert record is not None and record.stops(tid, 3, 41_250)
    assert not record.stops(tid, 3, 41_249)
    assert not record.stops(tid, 2, 50_000) and not record.stops(topic_id("other"), 3, 50_000)


def test_old_format_records_are_understood_and_never_a_stopping_point() -> None:
    record = decode(ledger_value(1_795_000_000_123))
    assert record == LedgerRecord(1_795_000_000_123)
    assert record is not None and record.topic is None
    assert not record.stops(topic_id("clicks"), 0, 10**12)
    assert decode(b"\x00" * 5) is None and decode(None) is None


def test_backfill_records_have_no_horizon() -> None:
    record = decode(encode(5, topic_id("clicks"), 0, 10, None))
    assert record is not None and record.horizon is None and record.offset == 10
    assert not record.stops(topic_id("clicks"), 0, 10**12)
    # a horizon that does not fit in the gap is dropped, never shrunk
    far = decode(encode(5, topic_id("clicks"), 0, 10, 10 + 2**33))
    assert far is not None and far.horizon is None


def test_horizons_only_rise_from_the_loaded_tail() -> None:
    horizons = Horizons()
    horizons.assigned("clicks", 0, 120)  # the loaded tail's records reach offset 119
    assert horizons.next("clicks", 0, 100) == 120  # below what predecessors wrote
    assert horizons.next("clicks", 0, 130) == 131
    assert horizons.next("clicks", 0, 110) == 131  # a rewind re-reads: never lower
    # a partition not assigned here (a late record after a revoke): no horizon at all
    assert horizons.next("clicks", 1, 7) is None
    horizons.revoked("clicks", 0)
    assert horizons.next("clicks", 0, 5) is None
    horizons.assigned("clicks", 0, 0)  # assigned again, an empty tail
    assert horizons.next("clicks", 0, 5) == 6


# --- probes while a ledger load runs ------------------------------------------------------


def test_a_load_that_makes_progress_is_live_and_not_ready() -> None:
    from pipeline.ops.health import HealthState

    load = [2, 1.0]  # two ledger partitions being read, the last record 1 s ago
    state = HealthState(liveness_timeout_s=5, ledger_load=lambda: (int(load[0]), load[1]))
    state.joined, state.brokers_up = True, 1
    state.last_stats = state.last_loop = 0.0  # the poll loop has not turned for ages
    state.on_statistics({"brokers": {"b": {"state": "UP", "nodeid": 1}}})
    live, details = state.liveness()
    assert live and details["ledger_loading"] == 2
    ready, checks = state.readiness()
    assert not ready and checks["ledger_loaded"] is False
    load[1] = 6.0  # the load stopped reading: a hang after all
    assert not state.liveness()[0]
    load[0] = 0  # loaded, and the loop turns again
    state.beat()
    assert state.liveness()[0] and state.readiness()[1]["ledger_loaded"] is True


def test_a_batch_added_at_once_holds_what_key_by_key_adds_hold() -> None:
    clock = Clock(100 * HOUR_MS)
    one_by_one = LedgerIndex(max_keys=5, retention_ms=24 * HOUR_MS, clock=clock)
    batched = LedgerIndex(max_keys=5, retention_ms=24 * HOUR_MS, clock=clock)
    first, second = ["a", "b", "c"], ["d", "e", "f", "g"]
    for keys, accepted_ms in ((first, clock.ms - 2 * 60_000), (second, clock.ms)):
        for key in keys:
            one_by_one.add(key, accepted_ms)
        assert batched.add_many(keys, accepted_ms)
    for key in "abcdefg":
        assert (key in batched) == (key in one_by_one), key
    assert len(batched) == len(one_by_one) and batched.evicted == one_by_one.evicted
    assert "g" in batched and "a" not in batched  # the oldest went first
    clock.ms += 24 * HOUR_MS - 60_000  # the first batch is now past the window
    assert batched.expire() == one_by_one.expire()
    assert not batched.add_many(["late"], clock.ms - 25 * HOUR_MS)
    assert "late" not in batched
