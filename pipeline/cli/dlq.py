"""``connect-pipeline dlq``: what is in the dead-letter topic, before a redrive.

Read-only: a throwaway consumer assigned to the topic's partitions (no group join, no
offset commit), reading from the start (or ``--since``) to each partition's end.
``dlq`` / ``dlq summary`` counts by reason and first offending field, oldest and
newest, per source topic; ``dlq show`` prints the records as JSON lines
(value decoded where possible, headers included), filtered by reason, field, source
topic and time.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import click
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from pipeline.cli.run import load_or_exit
from pipeline.config import Settings
from pipeline.kafka.dead_letter_view import (
    Entry,
    Filter,
    entry_json,
    parse_time,
    render_summary,
    summarise,
)
from pipeline.kafka.dead_letters import header_pairs, parse_dead_letter_headers
from pipeline.signals.outcomes import Reason

TIMEOUT_S: Final = 30.0
#: Stop when nothing arrives for this long although an end is not reported (a partition
#: whose leader is away): a view prints what it could read rather than hang.
IDLE_S: Final = 5.0


class DeadLetterTopicMissing(click.ClickException):
    pass


def to_entry(message: Message) -> Entry:
    headers = tuple(header_pairs(message)[0])  # none when a name is not UTF-8
    kind, stamp = message.timestamp()
    return Entry(
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        timestamp_ms=stamp if kind else None,
        key=message.key(),
        value=message.value(),
        headers=headers,
        info=parse_dead_letter_headers(headers),
    )


def read_dead_letters(
    settings: Settings, topic: str, *, since_ms: int | None = None, idle_s: float = IDLE_S
) -> Iterator[Entry]:
    """Every record of ``topic`` (from ``since_ms`` on), until each partition's end."""
    consumer = Consumer(
        {
            **settings.kafka_common(),
            # assigned, never subscribed: the group is neither joined nor committed to
            "group.id": f"{settings.group_id}-dlq-view-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            # an empty partition's end is reported after this wait: a view wants it soon
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise DeadLetterTopicMissing(f"dead-letter topic {topic!r} not found")
        partitions = sorted(metadata.partitions)
        starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        if since_ms is not None:
            query = [TopicPartition(topic, p, since_ms) for p in partitions]
            found = consumer.offsets_for_times(query, timeout=TIMEOUT_S)
            starts = [tp for tp in found if tp.offset >= 0]  # -1: nothing that recent
        if starts:
            consumer.assign(starts)
            yield from _read_to_end(consumer, {tp.partition for tp in starts}, idle_s)
    finally:
        consumer.close()


def _read_to_end(consumer: Consumer, partitions: set[int], idle_s: float) -> Iterator[Entry]:
    """Until each partition reports its end. Not to the end offsets listed at start: some
    brokers list them too low (the embedded test broker does); the fetch's end is right."""
    remaining = set(partitions)
    last_seen = time.monotonic()
    while remaining and time.monotonic() - last_seen < idle_s:
        for message in consumer.consume(500, timeout=0.1):
            last_seen = time.monotonic()
            error = message.error()
            if error is None:
                yield to_entry(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                remaining.discard(message.partition() or 0)
            else:
                raise click.ClickException(f"reading the dead-letter topic: {error}")


#: A value and its headers (a schema id may ride in one) to (decoded record, None) or
#: (None, why not).
Decode = Callable[
    [bytes | None, Sequence[tuple[str, bytes]]], tuple[dict[str, Any] | None, str | None]
]


def _decoder(settings: Settings) -> Decode:
    from pipeline.codec.avro import DecodeFailure
    from pipeline.kafka.runner import build_decoder

    decoder: Any = build_decoder(settings)

    def decode(
        value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> tuple[dict[str, Any] | None, str | None]:
        try:
            result = decoder.decode(value, list(headers) or None)
        except Exception as error:  # any bytes: a view never stops on one record
            return None, f"{type(error).__name__}: {error}"
        if isinstance(result, DecodeFailure):
            return None, f"{result.reason}: {result.message}"
        return {"schema": result.record_name, "record": result.record}, None

    return decode


# --- the commands ----------------------------------------------------------------------------


def _filter_options(command: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option(
            "--reason",
            "reasons",
            multiple=True,
            type=click.Choice([str(r) for r in Reason]),
            help="Only this reason (repeatable).",
        ),
        click.option(
            "--field", default=None, help="Only this first offending field (or its parent)."
        ),
        click.option(
            "--source-topic", "source_topics", multiple=True, help="Only from this topic."
        ),
        click.option(
            "--since", default=None, help="Dead-lettered at or after: ISO time, or 15m, 2h, 3d."
        ),
        click.option("--until", default=None, help="Dead-lettered at or before (same forms)."),
        click.option(
            "--dlq-topic", default=None, help="Dead-letter topic (default PIPELINE_DLQ_TOPIC)."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _select(
    reasons: tuple[str, ...],
    field: str | None,
    source_topics: tuple[str, ...],
    since: str | None,
    until: str | None,
    dlq_topic: str | None,
) -> tuple[Settings, str, Filter, Iterator[Entry]]:
    settings = load_or_exit()
    now = datetime.now(UTC)
    try:
        since_ms = parse_time(since, now) if since else None
        until_ms = parse_time(until, now) if until else None
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    wanted = Filter(frozenset(reasons), field, frozenset(source_topics), since_ms, until_ms)
    topic = dlq_topic or settings.dlq_topic
    entries = (
        e for e in read_dead_letters(settings, topic, since_ms=since_ms) if wanted.matches(e)
    )
    return settings, topic, wanted, entries


@click.group(invoke_without_command=True)
@click.pass_context
def dlq(context: click.Context) -> None:
    """What is in the dead-letter topic (read-only; configured from PIPELINE_* like run).

    Without a subcommand: the summary.
    """
    if context.invoked_subcommand is None:
        context.invoke(summary)


@dlq.command()
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
def summary(
    reasons: tuple[str, ...],
    field: str | None,
    source_topics: tuple[str, ...],
    since: str | None,
    until: str | None,
    dlq_topic: str | None,
    as_json: bool = False,
) -> None:
    """Counts by reason and first offending field, oldest and newest, per source topic."""
    _, topic, _, entries = _select(reasons, field, source_topics, since, until, dlq_topic)
    result = summarise(entries)
    if as_json:
        click.echo(json.dumps({"dead_letter_topic": topic, **result.as_json()}, indent=2))
    else:
        click.echo(render_summary(result, topic), nl=False)


@dlq.command()
@_filter_options
@click.option("--limit", default=100, show_default=True, help="At most this many (0: all).")
@click.option("--decode/--no-decode", default=True, help="Decode values with the schemas.")
def show(
    reasons: tuple[str, ...],
    field: str | None,
    source_topics: tuple[str, ...],
    since: str | None,
    until: str | None,
    dlq_topic: str | None,
    limit: int = 100,
    decode: bool = True,
) -> None:
    """The records, one JSON object a line: why, where from, headers, value."""
    settings, topic, _, entries = _select(reasons, field, source_topics, since, until, dlq_topic)
    decoder = _decoder(settings) if decode else None
    for shown, entry in enumerate(entries, 1):
        line = entry_json(entry, decoder, topic)
        click.echo(json.dumps(line, default=str, ensure_ascii=False))
        if limit and shown >= limit:
            click.echo(f"(stopped at --limit {limit})", err=True)
            break
    sys.stdout.flush()
