"""Format 3: one ledger record per (delivered batch, source partition)."""

from __future__ import annotations

import uuid

from pipeline.kafka.ledger_index import key_digest
from pipeline.kafka.ledger_records import (
    V3_MAX_ENTRIES,
    LedgerEntry,
    LedgerRecord,
    batch_key,
    by_source,
    decode,
    encode,
    encode_batch,
    encode_v1,
    entries,
    topic_id,
)

TID = topic_id("clicks")


def _keys(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


def test_a_batch_record_holds_every_key_and_offset_and_stops_like_format_2() -> None:
    keys = _keys(4)
    rows = [(1_007, keys[0]), (1_000, keys[1]), (1_003, keys[2]), (1_003, keys[3])]
    value = encode_batch(1_795_000_000_123, TID, 5, rows, 1_010)
    assert value is not None
    record = decode(value)
    assert record is not None
    assert record.entries == tuple(sorted(rows))
    assert (record.accepted_ms, record.topic, record.partition) == (1_795_000_000_123, TID, 5)
    assert record.offset == 1_007 and record.horizon == 1_010
    assert record.stops(TID, 5, 1_010) and not record.stops(TID, 5, 1_009)
    assert not record.stops(TID, 4, 2_000) and not record.stops(topic_id("x"), 5, 2_000)
    assert list(record.keyed(b"ignored")) == sorted(rows)
    # no horizon (a backfill) is never a stopping point
    backfill = decode(encode_batch(1, TID, 5, rows, None))
    assert backfill is not None and backfill.horizon is None
    assert not backfill.stops(TID, 5, 10**12)


def test_500_signals_fit_in_about_20_kb_and_the_record_key_follows_the_content() -> None:
    rows = [(10_000 + 2 * i, key) for i, key in enumerate(_keys(500))]
    value = encode_batch(1, TID, 0, rows, 20_000)
    assert value is not None and len(value) < 21_000  # ~41 B a UUID signal
    assert batch_key(value) == batch_key(bytes(value))
    other = encode_batch(2, TID, 0, rows, 20_000)
    assert other is not None and batch_key(other) != batch_key(value)


def test_what_format_3_cannot_hold_is_refused_so_the_writer_falls_back() -> None:
    assert encode_batch(1, TID, 0, [], 5) is None
    assert encode_batch(1, TID, 0, [(0, "é")], 5) is None  # not ASCII
    assert encode_batch(1, TID, 0, [(0, "k" * 256)], 5) is None  # key over 255 bytes
    assert encode_batch(1, TID, 0, [(0, "a"), (2**32, "b")], 5) is None  # offsets too far
    too_many = [(i, f"k{i}") for i in range(V3_MAX_ENTRIES + 1)]
    assert encode_batch(1, TID, 0, too_many, 5) is None


def test_damaged_format_3_values_decode_to_nothing() -> None:
    value = encode_batch(1, TID, 0, [(0, "a"), (1, "bb")], 5)
    assert value is not None
    assert decode(value[:-1]) is None and decode(value + b"x") is None
    assert decode(value[:31]) is None


def test_old_readers_skip_format_3_values_rather_than_misread_them() -> None:
    # the decoder before format 3 read 8-byte values as format 1 and 29-byte values
    # starting with 2 as format 2; anything else was skipped
    for n in (1, 2, 500):
        value = encode_batch(1, TID, 0, [(i, f"key-{i}") for i in range(n)], n)
        assert value is not None and value[0] == 3 and len(value) not in (8, 29)


def test_entries_reads_every_format_with_the_index_digest() -> None:
    v1 = entries(b"k1", encode_v1(7))
    assert v1 == [LedgerEntry(None, -1, -1, key_digest("k1"), 7)]
    v2 = entries(b"k2", encode(8, TID, 3, 40, 41))
    assert v2 == [LedgerEntry(TID, 3, 40, key_digest("k2"), 8, 41)]
    value = encode_batch(9, TID, 3, [(50, "k3"), (45, "k4")], 60)
    assert value is not None
    assert entries(batch_key(value), value) == [
        LedgerEntry(TID, 3, 45, key_digest("k4"), 9, 60),
        LedgerEntry(TID, 3, 50, key_digest("k3"), 9, 60),
    ]
    assert entries(None, encode(8, TID, 3, 40, 41)) == []  # a keyless old record
    assert entries(b"k", b"junk") == [] and entries(b"k", None) == []


def test_rows_are_grouped_by_source_partition_and_chunked() -> None:
    rows = [(("a", 0, i), f"a0-{i}") for i in range(V3_MAX_ENTRIES + 3)]
    rows += [(("a", 1, 7), "a1"), (("b", 0, 9), "b0")]
    groups = list(by_source(list(reversed(rows))))
    sizes = {(source, len(items)) for source, items in groups}
    assert sizes == {(("a", 0), V3_MAX_ENTRIES), (("a", 0), 3), (("a", 1), 1), (("b", 0), 1)}
    held = sorted(key for _, items in groups for _, key in items)
    assert held == sorted(key for _, key in rows)


def test_a_format_2_record_keys_itself() -> None:
    record = decode(encode(8, TID, 3, 40, 41))
    assert record == LedgerRecord(8, TID, 3, 40, 41)
    assert record is not None and list(record.keyed(b"key")) == [(40, "key")]


def test_digests_join_the_index_like_their_keys() -> None:
    from pipeline.kafka.ledger_index import LedgerIndex

    index = LedgerIndex(10_000, 3_600_000, clock=lambda: 10_000.0)
    assert index.add_digests([key_digest("a"), key_digest("b")], 9_999_000) == 2
    assert "a" in index and "b" in index and "c" not in index
    assert index.add_digests([key_digest("c")], 1) == 0  # older than the retention window
    assert "c" not in index
