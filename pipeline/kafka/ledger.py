"""The delivery ledger: which signals Connect accepted, so that none is sent twice.

The ledger is a Kafka topic (compacted, and trimmed by time); a record lands in the
ledger partition numbered like the source partition its signals were read from, so a
re-read of source partition ``p`` needs ledger partition ``p`` only. A record is
written only after Connect accepted its signals, inside the consumer's transaction
when transactions are on: one per delivered batch and source partition (format 3,
the idempotency keys in its value), or one per signal keyed by its idempotency key
(format 2, ``PIPELINE_LEDGER_FORMAT=2``, for a rolling upgrade's first step).

Since format 2 a record also names its source (topic, partition, offset) and a
horizon, so that a consumer reads only the ledger tail its partitions can re-read
(``ledger_records``, ``ledger_loader``), beside its poll loop (``ledger_tail``);
the in-memory index (``ledger_index``) holds
the keys read and accepted since, bounded by a maximum count (oldest evicted first,
counted and logged). This module is the ledger's public face: its parts are re-exported.

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
from typing import Any, Final

import structlog
from confluent_kafka.admin import AdminClient

from pipeline.config import Settings
from pipeline.kafka.ledger_index import LedgerIndex, key_digest
from pipeline.kafka.ledger_loader import LedgerLoader, LoadProgress, TailRequest
from pipeline.kafka.ledger_records import (
    Horizons,
    LedgerEntry,
    LedgerRecord,
    decode,
    encode,
    encode_batch,
    encode_v1,
    entries,
    topic_id,
)
from pipeline.kafka.topics import ensure_topic

__all__ = [
    "Horizons",
    "LedgerEntry",
    "LedgerIndex",
    "LedgerLoader",
    "LedgerRecord",
    "LoadProgress",
    "TailRequest",
    "decode",
    "duplicate_bound",
    "encode",
    "encode_batch",
    "ensure_ledger_topic",
    "entries",
    "key_digest",
    "ledger_partition",
    "ledger_value",
    "source_partition_count",
    "topic_id",
]

log = structlog.get_logger("pipeline.kafka.ledger")

#: linger.ms of the consumer's producer (ledger and dead-letter records).
PRODUCER_LINGER_MS: Final = 5
#: A produce round trip with acks=all on a local network (for ``duplicate_bound``).
LEDGER_ACK_S: Final = 0.02


def ledger_value(accepted_ms: int) -> bytes:
    """A format-1 value (the acceptance time alone), as written before the upgrade."""
    return encode_v1(accepted_ms)


def ledger_partition(source_partition: int, ledger_partitions: int) -> int:
    """The ledger partition of a source partition (modulo, should sources grow)."""
    return source_partition % ledger_partitions


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


def ensure_ledger_topic(
    kafka_conf: dict[str, Any], topic: str, partitions: int, retention_ms: int
) -> int:
    """Create the ledger topic when absent; returns its partition count."""
    config = {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}
    return ensure_topic(kafka_conf, topic, partitions, config, "ledger")


def source_partition_count(kafka_conf: dict[str, Any], settings: Settings) -> int:
    """The largest partition count among the source topics (1 if none exists yet)."""
    metadata = AdminClient(kafka_conf).list_topics(timeout=30).topics
    if settings.topic_pattern:
        pattern = re.compile(settings.source_topics[0])
        topics = [t for t in metadata if pattern.match(t)]
    else:
        topics = [t for t in settings.topics if t in metadata]
    return max((len(metadata[t].partitions) for t in topics), default=1)
