"""What is in the dead-letter topic, for an operator: filters, a summary, one record.

Pure functions over ``Entry`` values (a dead-letter record, its headers parsed once);
``connect-pipeline dlq`` reads the topic and prints what these return.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pipeline.kafka.dead_letters import DeadLetterInfo

_DURATION: Final = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class Entry:
    """One dead-letter record."""

    partition: int
    offset: int
    timestamp_ms: int | None  # when it was dead-lettered (the record's timestamp)
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    info: DeadLetterInfo


@dataclass(frozen=True, slots=True)
class Filter:
    """Which entries to look at; an empty filter takes all."""

    reasons: frozenset[str] = frozenset()
    field: str | None = None  # a field path, or a prefix of one (``items`` takes ``items[0].sku``)
    source_topics: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, entry: Entry) -> bool:
        info = entry.info
        if self.reasons and info.reason not in self.reasons:
            return False
        if self.source_topics and info.topic not in self.source_topics:
            return False
        if self.field is not None and not field_matches(info.field or "", self.field):
            return False
        stamp = entry.timestamp_ms
        if self.since_ms is not None and (stamp is None or stamp < self.since_ms):
            return False
        return self.until_ms is None or (stamp is not None and stamp <= self.until_ms)


def field_matches(field_path: str, wanted: str) -> bool:
    """Exact, or ``wanted`` is a parent of the path (``items`` of ``items[0].sku``)."""
    if field_path == wanted:
        return True
    return field_path.startswith(wanted) and field_path[len(wanted) : len(wanted) + 1] in ".["


def parse_time(text: str, now: datetime) -> int:
    """Milliseconds since the epoch of ``2026-11-30T10:00:00Z``-like text, or of a
    duration before ``now`` (``90s``, ``15m``, ``2h``, ``3d``, ``1w``)."""
    match = _DURATION.match(text.strip().lower())
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return int((now - timedelta(seconds=seconds)).timestamp() * 1000)
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r}: expected an ISO 8601 time (2026-11-30T10:00:00Z) or a duration "
            "before now (15m, 2h, 3d)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


# --- summary ------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """Counts of one group of entries."""

    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    fields: Counter[str] = field(default_factory=Counter)
    oldest_ms: int | None = None
    newest_ms: int | None = None

    def add(self, entry: Entry) -> None:
        self.count += 1
        self.reasons[entry.info.reason or "(no reason header)"] += 1
        self.fields[entry.info.field or "(whole event)"] += 1
        stamp = entry.timestamp_ms
        if stamp is not None:
            self.oldest_ms = stamp if self.oldest_ms is None else min(self.oldest_ms, stamp)
            self.newest_ms = stamp if self.newest_ms is None else max(self.newest_ms, stamp)

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "by_reason": dict(self.reasons.most_common()),
            "by_field": dict(self.fields.most_common()),
            "oldest": iso(self.oldest_ms),
            "newest": iso(self.newest_ms),
        }


@dataclass(slots=True)
class Summary:
    total: Tally = field(default_factory=Tally)
    by_source_topic: dict[str, Tally] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        self.total.add(entry)
        topic = entry.info.topic or "(unknown source)"
        self.by_source_topic.setdefault(topic, Tally()).add(entry)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.total.as_json(),
            "by_source_topic": {t: v.as_json() for t, v in sorted(self.by_source_topic.items())},
        }


def summarise(entries: Iterable[Entry]) -> Summary:
    summary = Summary()
    for entry in entries:
        summary.add(entry)
    return summary


def render_summary(summary: Summary, dlq_topic: str, top: int = 10) -> str:
    """The summary for a terminal: totals, then each source topic."""
    total = summary.total
    lines = [f"dead-letter topic {dlq_topic}: {total.count} records"]
    if not total.count:
        return lines[0] + "\n"
    lines += _tally_lines(total, "", top)
    for topic, tally in sorted(summary.by_source_topic.items()):
        lines.append("")
        lines.append(f"source topic {topic}: {tally.count}")
        lines += _tally_lines(tally, "  ", top)
    return "\n".join(lines) + "\n"


def _tally_lines(tally: Tally, indent: str, top: int) -> list[str]:
    lines = [f"{indent}oldest {iso(tally.oldest_ms)}   newest {iso(tally.newest_ms)}"]
    for title, counter in (("by reason", tally.reasons), ("by first field", tally.fields)):
        lines.append(f"{indent}{title}:")
        common = counter.most_common(top)
        lines += [f"{indent}  {name:<40} {n:>8}" for name, n in common]
        rest = sum(counter.values()) - sum(n for _, n in common)
        if rest:
            lines.append(f"{indent}  {f'({len(counter) - len(common)} more)':<40} {rest:>8}")
    return lines


# --- one record ----------------------------------------------------------------------------


def _text_or_base64(data: bytes) -> dict[str, str] | str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def entry_json(
    entry: Entry,
    decode: Callable[
        [bytes | None, Sequence[tuple[str, bytes]]], tuple[dict[str, Any] | None, str | None]
    ]
    | None,
    dlq_topic: str,
) -> dict[str, Any]:
    """One dead-letter record for ``dlq show``: where it came from, why, its headers and
    its value (decoded when ``decode`` can; else base64 and why not)."""
    info = entry.info
    out: dict[str, Any] = {
        "dead_letter": {
            "topic": dlq_topic,
            "partition": entry.partition,
            "offset": entry.offset,
            "time": iso(entry.timestamp_ms),
        },
        "reason": info.reason,
        "field": info.field,
        "message": info.message,
        "attempt": info.attempt,
        "source": {
            "topic": info.topic,
            "partition": info.partition,
            "offset": info.offset,
            "time": iso(info.timestamp_ms),
        },
        "key": None if entry.key is None else _text_or_base64(entry.key),
        "headers": {k: _text_or_base64(v) for k, v in entry.headers},
    }
    if decode is not None and entry.value:
        record, problem = decode(entry.value, entry.headers)
        if record is not None:
            out["value"] = record
            return out
        out["value_error"] = problem
    if entry.value is not None:
        out["value_base64"] = base64.b64encode(entry.value).decode()
    return out
