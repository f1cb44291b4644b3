"""``connect-pipeline redrive``: send dead-lettered events again, after a fix.

Reads the dead-letter topic in its own consumer group (so each record is redriven
once), up to the end offsets captured at start, through the same processor and
delivery as the live consumer, with the same idempotency: the ledger partition is
the one of the original source partition (``__connect.errors.partition``). Records
that still fail go back to the dead-letter topic with fresh error headers and
``connect.signals.attempt`` one higher.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from typing import Final

import structlog
from confluent_kafka import Consumer, Message, TopicPartition

from pipeline.codec.avro import SchemaRegistryUnavailable
from pipeline.codec.registry_answers import SchemaLookupRunning
from pipeline.config import Settings
from pipeline.kafka.dead_letters import (
    DeadLetterInfo,
    Source,
    header_pairs,
    parse_dead_letter_headers,
)
from pipeline.kafka.ledger import key_digest
from pipeline.kafka.ledger_join import JoinStats
from pipeline.kafka.records import Bounds, RecordOrigin, RunSummary
from pipeline.kafka.replay import (
    TIMEOUT_S,
    _metadata_consumer,
    bounded_settings,
    ledger_join,
    run_bounded,
)
from pipeline.signals.mapping import MappedSignal
from pipeline.signals.processor import EventProcessor, Headers, Outcome

log = structlog.get_logger("pipeline.kafka.redrive")


def _info(message: Message) -> DeadLetterInfo:
    return parse_dead_letter_headers(header_pairs(message)[0])


class DeadLetterOrigin(RecordOrigin):
    """A dead-letter record stands for the source record its headers name."""

    def __init__(self, reasons: Collection[str] = ()) -> None:
        self._reasons = frozenset(reasons)

    def wanted(self, message: Message) -> bool:
        if not self._reasons:
            return True
        return (_info(message).reason or "") in self._reasons

    def partition(self, message: Message) -> int:
        partition = _info(message).partition
        return partition if partition is not None else (message.partition() or 0)

    def source(self, message: Message) -> tuple[Source, int]:
        own, _ = super().source(message)
        info = _info(message)
        source = Source(
            info.topic or own.topic,
            self.partition(message),
            info.offset if info.offset is not None else own.offset,
            info.timestamp_ms,
            message.key(),
            message.value(),
            tuple(header_pairs(message)[0]),  # the previous error headers are replaced
        )
        return source, info.attempt + 1


def redrive_bounds(settings: Settings, dlq_topic: str) -> Bounds:
    """From the redrive group's committed offsets to the end captured now."""
    consumer = _metadata_consumer(settings)
    try:
        metadata = consumer.list_topics(dlq_topic, timeout=TIMEOUT_S).topics[dlq_topic]
        keys = [(dlq_topic, p) for p in sorted(metadata.partitions)]
        committed = consumer.committed([TopicPartition(*k) for k in keys], timeout=TIMEOUT_S)
        start, end = {}, {}
        for tp in committed:
            key = (tp.topic, tp.partition)
            low, high = consumer.get_watermark_offsets(TopicPartition(*key), timeout=TIMEOUT_S)
            start[key] = max(tp.offset, low) if tp.offset >= 0 else low
            end[key] = high
    finally:
        consumer.close()
    return Bounds(start, end, whole_ledger=True)


@dataclass(frozen=True, slots=True)
class DeadLetterKeys:
    """The idempotency keys (``key_digest``) of the dead letters a redrive will read,
    and the source ranges they came from (None: a dead letter without its source)."""

    digests: frozenset[int]
    sources: dict[tuple[str, int], tuple[int, int]] | None


def dead_letter_keys(
    settings: Settings, bounds: Bounds, origin: DeadLetterOrigin, processor: EventProcessor
) -> DeadLetterKeys:
    """The keys of the dead letters this redrive will read, and where they came from.

    Dead letters come from any source partition and any time; their headers say which
    (``__connect.errors.topic/partition/offset``): per source partition, the lowest and
    highest offset bound the ledger read (``redrive_ledger``), and the keys bound what
    it holds (memory follows the dead letters, not the ledger).
    """
    todo = {key: start for key, start in bounds.start.items() if start < bounds.end[key]}
    if not todo:
        return DeadLetterKeys(frozenset(), {})
    consumer = Consumer(
        {
            **settings.kafka_common(),
            "group.id": f"{settings.group_id}-keys",  # assigned, never joined nor committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    digests: set[int] = set()
    sources: dict[tuple[str, int], tuple[int, int]] | None = {}
    try:
        consumer.assign([TopicPartition(t, p, start) for (t, p), start in todo.items()])
        remaining = set(todo)
        while remaining:
            for message in consumer.consume(1000, timeout=1.0):
                key = (message.topic() or "", message.partition() or 0)
                error, offset = message.error(), message.offset() or 0
                if error is not None or offset + 1 >= bounds.end[key]:
                    remaining.discard(key)  # the end (or past it: an undercounted end)
                if error is not None or offset >= bounds.end[key] or not origin.wanted(message):
                    continue
                outcome = _process_through_outages(processor, message.value(), _headers(message))
                if isinstance(outcome, MappedSignal):
                    digests.add(key_digest(outcome.idempotency_key))
                    sources = _widen(sources, _info(message), origin.partition(message))
    finally:
        consumer.close()
    return DeadLetterKeys(frozenset(digests), sources)


def _widen(
    sources: dict[tuple[str, int], tuple[int, int]] | None, info: DeadLetterInfo, partition: int
) -> dict[tuple[str, int], tuple[int, int]] | None:
    """The source ranges, widened to this dead letter's source (None: it has none)."""
    if sources is None or info.topic is None or info.offset is None:
        return None
    key = (info.topic, partition)
    low, high = sources.get(key, (info.offset, info.offset + 1))
    sources[key] = (min(low, info.offset), max(high, info.offset + 1))
    return sources


def redrive_ledger(settings: Settings, keys: DeadLetterKeys) -> tuple[array[int], JoinStats] | None:
    """Which of the dead letters' keys the ledger holds: read from each source
    partition's horizon stop below its lowest dead letter (``LedgerJoin``), not the
    whole retention; with what the join read. None: a dead letter without its source
    (the whole retention is read, as before)."""
    if keys.sources is None:
        return None
    if not keys.digests:
        return array("Q"), JoinStats()
    join = ledger_join(settings, keys.sources, window=len(keys.digests))
    try:
        join.plan()
        held = join.everything(keys.digests)
    finally:
        join.close()
    log.info(
        "redrive joined with the ledger",
        dead_letter_keys=len(keys.digests),
        held=len(held),
        ledger_read=join.stats.planned + join.stats.reread,
    )
    return held, join.stats


def _headers(message: Message) -> Headers:
    """The record's headers (a dead letter keeps its source's: a schema id header too)."""
    try:
        return message.headers()
    except (UnicodeDecodeError, ValueError):  # a name that is not UTF-8: the value decides
        return None


#: How often a redrive asks again while a registry look-up runs.
LOOKUP_POLL_S: Final = 0.05


def _process_through_outages(
    processor: EventProcessor,
    value: bytes | None,
    headers: Headers = None,
    max_backoff_s: float = 30.0,
) -> Outcome:
    """The processor's outcome; a registry outage waits and asks again, as the loop does.

    (A one-off command may block: nothing else is waiting on this thread.)
    """
    backoff_s = 1.0
    while True:
        try:
            return processor.process(value, headers)
        except SchemaLookupRunning:  # slow, not failing: asked again shortly
            time.sleep(LOOKUP_POLL_S)
        except SchemaRegistryUnavailable as error:
            log.warning("schema registry unavailable: waiting", error=str(error), wait_s=backoff_s)
            time.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, max_backoff_s)


def redrive_group(settings: Settings, reasons: Collection[str]) -> str:
    """One group per reason filter: a filtered redrive passes over the other records,
    which a later redrive for their reason (or for all) still reads."""
    suffix = "".join(f"-{r}" for r in sorted(reasons))
    return f"{settings.group_id}-redrive{suffix}"


def run_redrive(
    live: Settings,
    reasons: Collection[str] = (),
    *,
    group: str | None = None,
    progress: bool = False,
) -> RunSummary:
    from pipeline.kafka.runner import build_processor

    settings = bounded_settings(live, group or redrive_group(live, reasons))
    bounds = redrive_bounds(settings, live.dlq_topic)
    origin = DeadLetterOrigin(reasons)
    held: Iterable[int] = ()
    if settings.ledger_enabled:  # hold the ledger records of these dead letters only
        keys = dead_letter_keys(settings, bounds, origin, build_processor(settings))
        joined = redrive_ledger(settings, keys)
        if joined is None:
            bounds = replace(bounds, ledger_keys=keys.digests)
        else:
            bounds, held = replace(bounds, ledger_preloaded=True), joined[0]
    return run_bounded(
        settings, bounds, origin=origin, progress=progress, description="redrive", preloaded=held
    )
