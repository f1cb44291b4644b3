"""The delivery ledger: which signals Connect accepted, so that none is sent twice.

The ledger is a Kafka topic (compacted, and trimmed by time) keyed by the signal's
idempotency key; a key lands in the ledger partition numbered like the source
partition it was read from, so a re-read of source partition ``p`` needs ledger
partition ``p`` only. A record is written only after Connect accepted the signal,
inside the consumer's transaction when transactions are on.

The in-memory index holds the keys accepted within the retention window, bounded by
a maximum count (oldest evicted first, counted and logged).

Ledger partitions are read *uncommitted*, on purpose: a ledger record states a fact
("Connect accepted this key") that is true as soon as it is written, even when the
transaction that carried it is later aborted or its producer dies. Reading only
committed records would re-send everything a crashed replica delivered since its
last commit; reading them all narrows the duplicate window to the batches whose
acceptance had not yet reached the ledger (see ``duplicate_bound``).
"""

from __future__ import annotations

import math
import re
import socket
import struct
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from pipeline.config import Settings

log = structlog.get_logger("pipeline.kafka.ledger")

LOAD_TIMEOUT_S: Final = 300.0
#: linger.ms of the consumer's producer (ledger and dead-letter records).
PRODUCER_LINGER_MS: Final = 5
#: A produce round trip with acks=all on a local network (for ``duplicate_bound``).
LEDGER_ACK_S: Final = 0.02
_VALUE: Final = struct.Struct(">q")


def ledger_value(accepted_ms: int) -> bytes:
    """A ledger record's value: when Connect accepted the signal (ms since epoch)."""
    return _VALUE.pack(accepted_ms)


def ledger_partition(source_partition: int, ledger_partitions: int) -> int:
    """The ledger partition of a source partition (modulo, should sources grow)."""
    return source_partition % ledger_partitions


def transactional_id(settings: Settings) -> str:
    """Stable per replica: a restarted replica fences its own previous incarnation."""
    if settings.transactional_id:
        return settings.transactional_id
    replica = settings.group_instance_id or socket.gethostname()
    return f"{settings.group_id}-{replica}"


def duplicate_bound(
    settings: Settings,
    *,
    min_call_latency_s: float = 0.0,
    ledger_ack_s: float = LEDGER_ACK_S,
) -> int:
    """The most signals one replica's crash or fencing can make Connect receive twice.

    A signal is sent again only when Connect accepted it but its ledger record never
    reached the broker: the batches in flight when the process died (or was fenced),
    plus the batches that complete while the last ledger records are still unacked
    (one producer linger, ``PRODUCER_LINGER_MS``, plus one broker round trip,
    ``ledger_ack_s``): a crash loses those records, a fenced producer has them
    refused, and stops dispatching at the first refusal. A transaction open at the
    crash is aborted, but its ledger records are read all the same (read uncommitted).
    The rounds that can complete in that time are bounded by ``min_call_latency_s``;
    without it, one round.
    """
    in_flight = settings.max_in_flight_batches
    if min_call_latency_s > 0:
        window_s = PRODUCER_LINGER_MS / 1000 + ledger_ack_s
        rounds = math.ceil(window_s / min_call_latency_s)
    else:
        rounds = 1
    return settings.batch_max_signals * in_flight * (1 + rounds)


#: Digests are 64-bit: the in-process ``hash()`` of the key, as an unsigned value.
_DIGEST_MASK: Final = (1 << 64) - 1
#: Keys per hash bucket when the index is full (a bucket is scanned in C, ~0.3 µs).
_BUCKET_KEYS: Final = 16


def key_digest(key: str) -> int:
    """A key's 64-bit digest: ``hash()`` of a str is SipHash-1-3 under a random per-process
    secret (cached on the str), so colliding keys cannot be crafted from outside.

    The index is rebuilt from the ledger topic in each process, so a per-process digest
    is enough. Two keys sharing a digest make the newer one look delivered: with n keys
    held, the chance for one lookup is n / 2**64 (about 5e-14 at 1,000,000 keys).
    """
    return hash(key) & _DIGEST_MASK


class LedgerIndex:
    """Keys accepted within the retention window, at most ``max_keys`` of them.

    Compact, because a backlog fills it to ``max_keys``: a key is held as a 64-bit
    digest in two flat arrays, never as a Python object (a str key and its dict slot
    cost ~120 bytes; this costs ~24):

    - membership: ``max_keys / 16`` buckets (``array('Q')``), chosen by the digest's
      low bits, each scanned in C;
    - age: chunks of digests in insertion order, one per minute of acceptance (about
      time order: the ledger is read in offset order and appended as Connect accepts).
      Expiry and eviction drop whole chunks, or the front of the oldest one.

    A key added again is held twice (its older copy goes with its older chunk), so
    it stays a member as long as its newest copy; ``len`` counts copies.
    """

    __slots__ = (
        "_buckets",
        "_chunks",
        "_clock",
        "_count",
        "_mask",
        "evicted",
        "expired",
        "max_keys",
        "retention_ms",
    )

    def __init__(
        self,
        max_keys: int,
        retention_ms: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_keys = max_keys
        self.retention_ms = retention_ms
        self._clock = clock
        buckets = 1 << max(0, (max_keys // _BUCKET_KEYS).bit_length())
        self._mask = buckets - 1
        self._buckets: list[array[int] | None] = [None] * buckets  # created on first use
        self._chunks: deque[tuple[int, array[int]]] = deque()  # (minute, digests), oldest first
        self._count = 0
        self.evicted = 0  # dropped to stay under max_keys
        self.expired = 0  # dropped for being older than the retention window

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        digest = hash(key) & _DIGEST_MASK  # key_digest, inlined: once per signal
        bucket = self._buckets[digest & self._mask]
        return bucket is not None and digest in bucket

    def cutoff_ms(self) -> int:
        return int(self._clock() * 1000) - self.retention_ms

    def add(self, key: str, accepted_ms: int) -> bool:
        """Remember a key; False when it is already older than the retention window."""
        if accepted_ms < self.cutoff_ms():
            return False
        minute = accepted_ms // 60_000
        digest = key_digest(key)
        slot = digest & self._mask
        bucket = self._buckets[slot]
        if bucket is None:
            bucket = self._buckets[slot] = array("Q")
        bucket.append(digest)
        # An older minute (partitions read out of step) joins the newest chunk: it then
        # expires a little late, never early.
        if not self._chunks or minute > self._chunks[-1][0]:
            self._chunks.append((minute, array("Q")))
        self._chunks[-1][1].append(digest)
        self._count += 1
        if self._count > self.max_keys:
            # 1% at a time: fewer, larger cuts of the oldest chunk
            self._evict(self._count - self.max_keys + self.max_keys // 100)
        return True

    def _drop_oldest(self, count: int) -> int:
        """Forget up to ``count`` of the oldest copies; returns how many."""
        dropped = 0
        while dropped < count and self._chunks:
            _, digests = self._chunks[0]
            take = min(count - dropped, len(digests))
            for digest in digests[:take]:
                bucket = self._buckets[digest & self._mask]
                assert bucket is not None
                bucket.remove(digest)  # the first copy in the bucket is the oldest
            if take == len(digests):
                self._chunks.popleft()
            else:
                del digests[:take]
            dropped += take
        self._count -= dropped
        return dropped

    def _evict(self, count: int) -> None:
        first = self.evicted == 0
        count = self._drop_oldest(count)
        self.evicted += count
        if first or self.evicted % 100_000 < count:
            log.warning(
                "ledger over PIPELINE_LEDGER_MAX_KEYS: oldest keys evicted",
                evicted=self.evicted,
                max_keys=self.max_keys,
            )

    def expire(self) -> int:
        """Drop keys older than the retention window (whole chunks, oldest first)."""
        cutoff_minute = self.cutoff_ms() // 60_000
        old = 0
        for minute, digests in self._chunks:
            if minute >= cutoff_minute:
                break
            old += len(digests)
        if old:
            self.expired += self._drop_oldest(old)
        return old


def ensure_ledger_topic(
    kafka_conf: dict[str, Any], topic: str, partitions: int, retention_ms: int
) -> int:
    """Create the ledger topic when absent; returns its partition count."""
    admin = AdminClient(kafka_conf)
    existing = admin.list_topics(timeout=30).topics.get(topic)
    if existing is not None and existing.partitions:
        return len(existing.partitions)
    config = {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}
    futures = admin.create_topics([NewTopic(topic, partitions, -1, config=config)])
    try:
        futures[topic].result(30)
        log.info("ledger topic created", topic=topic, partitions=partitions)
    except Exception as error:  # created meanwhile by another replica
        if "TOPIC_ALREADY_EXISTS" not in str(error) and "already exists" not in str(error):
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        created = admin.list_topics(topic, timeout=10).topics.get(topic)
        if created is not None and created.partitions and created.error is None:
            return len(created.partitions)
        time.sleep(0.2)
    raise RuntimeError(f"ledger topic {topic} did not appear")


def source_partition_count(kafka_conf: dict[str, Any], settings: Settings) -> int:
    """The largest partition count among the source topics (1 if none exists yet)."""
    metadata = AdminClient(kafka_conf).list_topics(timeout=30).topics
    if settings.topic_pattern:
        pattern = re.compile(settings.source_topics[0])
        topics = [t for t in metadata if pattern.match(t)]
    else:
        topics = [t for t in settings.topics if t in metadata]
    return max((len(metadata[t].partitions) for t in topics), default=1)


class LedgerLoader:
    """Reads ledger partitions into the index, each from where it last stopped."""

    def __init__(self, kafka_conf: dict[str, Any], topic: str, index: LedgerIndex) -> None:
        self._conf = {
            **kafka_conf,
            "group.id": f"ledger-loader-{uuid.uuid4().hex[:12]}",  # never commits
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted",  # see the module docstring
            "auto.offset.reset": "earliest",
        }
        self.topic = topic
        self.index = index
        self._positions: dict[int, int] = {}

    def load(self, partitions: Iterable[int]) -> int:
        """Read each partition to its end; returns how many records were read."""
        wanted = sorted(set(partitions))
        if not wanted:
            return 0
        started = time.monotonic()
        consumer = Consumer(self._conf)
        try:
            assignment = self._start_offsets(consumer, wanted)
            consumer.assign(assignment)
            read = self._read_to_end(consumer, set(wanted))
        finally:
            consumer.close()
        log.info(
            "ledger loaded",
            topic=self.topic,
            partitions=wanted,
            records=read,
            keys=len(self.index),
            seconds=round(time.monotonic() - started, 3),
        )
        return read

    def _start_offsets(self, consumer: Consumer, partitions: list[int]) -> list[TopicPartition]:
        fresh = [p for p in partitions if p not in self._positions]
        starts = {p: self._positions[p] for p in partitions if p in self._positions}
        if fresh:
            # Skip what is older than the retention window without reading it.
            since = self.index.cutoff_ms()
            query = [TopicPartition(self.topic, p, since) for p in fresh]
            for tp in consumer.offsets_for_times(query, timeout=30):
                starts[tp.partition] = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        return [TopicPartition(self.topic, p, starts[p]) for p in partitions]

    def _read_to_end(self, consumer: Consumer, remaining: set[int]) -> int:
        read = 0
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while remaining:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ledger {self.topic}: partitions {remaining} not loaded")
            for message in consumer.consume(1000, timeout=0.1):
                partition = message.partition()
                assert partition is not None
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(partition)
                        self._positions[partition] = message.offset() or 0
                        continue
                    raise RuntimeError(f"ledger {self.topic}: {error}")
                key, value = message.key(), message.value()
                self._positions[partition] = (message.offset() or 0) + 1
                if key is None or value is None or len(value) != _VALUE.size:
                    continue
                self.index.add(key.decode(), _VALUE.unpack(value)[0])
                read += 1
        return read
