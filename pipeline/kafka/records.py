"""What the loop carries for one record, where records come from, what a run did."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import Message

from pipeline.kafka.dead_letters import Source, header_pairs

if TYPE_CHECKING:
    from pipeline.kafka.partition_state import PartitionState

TopicPartitionKey = tuple[str, int]


@dataclass(slots=True)
class Pending:
    """A record on its way: what is needed to finish it or dead-letter it.

    ``state`` is the partition generation that read it: finishing goes there, so a
    record of a retired generation can never move a newer generation's offsets.
    """

    message: Message
    size: int  # bytes it holds against PIPELINE_MAX_BUFFERED_BYTES, 0 once released
    signal_type: str
    state: PartitionState
    offset: int
    key: str = ""  # the signal's idempotency key
    ledger_partition: int = 0  # the source partition (a redrive reads it from headers)
    #: a derived signal (pipeline.sessions): holds back no offset; finishing it settles it
    on_finish: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class Bounds:
    """Replay and redrive: explicit partitions, each read from start up to end (excl.)."""

    start: dict[tuple[str, int], int]
    end: dict[tuple[str, int], int]
    #: load every ledger partition (a redrive: its records come from any partition)
    whole_ledger: bool = False
    #: with ``whole_ledger``: hold only these keys (``key_digest``), None: all
    ledger_keys: frozenset[int] | None = None
    #: the caller filled the index (a replay's join, window by window): load nothing
    ledger_preloaded: bool = False


class RecordOrigin:
    """Where a record came from: itself, or (in a redrive) what its DLQ headers say."""

    def wanted(self, message: Message) -> bool:
        """False: finish the record untouched (a redrive filtered by reason)."""
        return True

    def partition(self, message: Message) -> int:
        return message.partition() or 0

    def source(self, message: Message) -> tuple[Source, int]:
        """The source for dead-letter headers, and the attempt number."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        timestamp_type, timestamp = message.timestamp()
        headers, unreadable = header_pairs(message)
        source = Source(
            topic,
            partition,
            offset,
            timestamp if timestamp_type else None,
            message.key(),
            message.value(),
            tuple(headers),
            unreadable,
        )
        return source, 1


@dataclass(slots=True)
class RunSummary:
    """What one run did, for the demo's report and the tests."""

    consumed: int = 0
    delivered: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    api_calls: int = 0
    api_retries: int = 0
    skipped: int = 0  # already accepted by Connect (the ledger): never sent again
    filtered: int = 0  # a redrive's records of other reasons, left alone

    @property
    def delivered_total(self) -> int:
        return sum(self.delivered.values())

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())
