"""Registering the generated schemas with a Schema Registry, compatibility checked first.

Pure parts: subject names (``subject_name``), the registration order
(``registration_plan``: every earlier-edition schema before the current one, so a
subject's history mirrors the editions) and the local compatibility check
(``compatibility_problems``, Apache Avro's reader/writer checker). The I/O edge is
``register``, which talks to a ``SchemaRegistryClient`` (or its ``mock://`` twin).

Two checks guard every registration:

- **local**, always: the candidate against the subject's registered versions of the
  *same record* at a chosen level (default BACKWARD_TRANSITIVE: the pipeline reads
  every older event with the current reader schema, so the newest schema must read
  them all). Versions of other records in the subject (TopicNameStrategy with several
  types on one topic) are not compared: a reader never resolves one record with another.
- **registry**: ``test_compatibility`` against the subject's latest version, under
  the level the registry has for that subject. Skipped only when the client cannot
  answer it (confluent-kafka's in-process mock has no compatibility endpoint).

Several record types on one topic with TopicNameStrategy put unrelated records in one
subject; a registry at its default level (BACKWARD) refuses the second record. This
module never changes the registry's configuration: the operator either sets that
subject's level to NONE (the local check still guards each record's history) or uses
RecordNameStrategy / TopicRecordNameStrategy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

SCHEMA_TYPE: Final = "AVRO"


class SubjectStrategy(StrEnum):
    """How a schema's subject is named (Confluent's subject name strategies)."""

    TOPIC = "topic"  # TopicNameStrategy: <topic>-value
    RECORD = "record"  # RecordNameStrategy: connect.signals.OrderEvent
    TOPIC_RECORD = "topic-record"  # TopicRecordNameStrategy: <topic>-connect.signals.OrderEvent


class Level(StrEnum):
    """Schema Registry compatibility levels."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"


def load_schemas(directory: Path) -> list[tuple[int, dict[str, Any]]]:
    """``<dir>/v<edition>/*.avsc`` as (edition, schema) pairs (see ``read_schemas``)."""
    from pipeline.codec.schemas import read_schemas

    return read_schemas(directory)


def full_name(schema: dict[str, Any]) -> str:
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def subject_name(strategy: SubjectStrategy, record_name: str, topic: str | None) -> str:
    """The subject a record's schema is registered under."""
    if strategy is SubjectStrategy.RECORD:
        return record_name
    if not topic:
        raise ValueError(f"the {strategy} subject name strategy needs a topic")
    if strategy is SubjectStrategy.TOPIC:
        return f"{topic}-value"
    return f"{topic}-{record_name}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One schema to register: where, which record, which edition."""

    subject: str
    record_name: str
    edition: int
    schema: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.record_name} (edition v{self.edition})"


def registration_plan(
    schemas: Iterable[tuple[int, dict[str, Any]]],
    strategy: SubjectStrategy,
    topic: str | None = None,
    records: Iterable[str] | None = None,
) -> list[Candidate]:
    """Every schema with its subject, oldest edition first, then by record name.

    ``records`` keeps only those full names (e.g. one type per topic).
    """
    wanted = set(records) if records is not None else None
    plan = [
        Candidate(subject_name(strategy, full_name(s), topic), full_name(s), edition, s)
        for edition, s in schemas
        if wanted is None or full_name(s) in wanted
    ]
    return sorted(plan, key=lambda c: (c.edition, c.record_name))


def _reads(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer`` (empty: it can)."""
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return sorted(result.messages) or [str(i.value) for i in result.incompatibilities]


def compatibility_problems(
    candidate: dict[str, Any], previous: Sequence[dict[str, Any]], level: Level
) -> list[str]:
    """What breaks ``level`` between the candidate and earlier versions (oldest first).

    Only earlier versions of the same record are compared. Empty: compatible.
    """
    if level is Level.NONE:
        return []
    same = [p for p in previous if full_name(p) == full_name(candidate)]
    if not level.endswith("_TRANSITIVE"):
        same = same[-1:]
    new = avro.schema.parse(json.dumps(candidate))
    problems = []
    for number, old_schema in enumerate(same, start=1):
        old = avro.schema.parse(json.dumps(old_schema))
        which = "the latest version" if number == len(same) else f"earlier version {number}"
        if level.startswith(("BACKWARD", "FULL")):
            problems += [f"cannot read data written with {which}: {m}" for m in _reads(new, old)]
        if level.startswith(("FORWARD", "FULL")):
            problems += [f"{which} cannot read data it writes: {m}" for m in _reads(old, new)]
    return problems


# --- the registry edge -----------------------------------------------------------------


class Registry(Protocol):
    """What ``register`` needs of confluent-kafka's SchemaRegistryClient."""

    def get_versions(self, subject_name: str) -> list[int]: ...
    def get_version(self, subject_name: str, version: int) -> Any: ...
    def lookup_schema(self, subject_name: str, schema: Any) -> Any: ...
    def test_compatibility(self, subject_name: str, schema: Any) -> bool: ...
    def register_schema(self, subject_name: str, schema: Any) -> int: ...


class Status(StrEnum):
    REGISTERED = "registered"
    EXISTS = "already registered"
    REFUSED = "refused"
    WOULD_REGISTER = "would register"  # dry run


@dataclass(frozen=True, slots=True)
class Result:
    candidate: Candidate
    status: Status
    schema_id: int | None = None
    version: int | None = None
    message: str = ""

    def describe(self) -> str:
        where = f"subject {self.candidate.subject!r}"
        text = f"{self.status}: {self.candidate.label} -> {where}"
        if self.schema_id is not None:
            text += f" (id {self.schema_id}, version {self.version})"
        return f"{text}: {self.message}" if self.message else text


def _not_found(error: Exception) -> bool:
    return getattr(error, "http_status_code", None) == 404


def _schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema)  # as devtools.producer registers it


def _history(client: Registry, subject: str) -> list[dict[str, Any]]:
    """The subject's registered Avro schemas, oldest first ([] for a new subject)."""
    try:
        versions = sorted(client.get_versions(subject))
    except Exception as error:
        if _not_found(error):
            return []
        raise
    history = []
    for version in versions:
        registered = client.get_version(subject, version)
        schema = registered.schema
        if (schema.schema_type or SCHEMA_TYPE) == SCHEMA_TYPE:
            history.append(json.loads(schema.schema_str))
    return history


def _lookup(client: Registry, subject: str, schema: Any) -> Any | None:
    try:
        return client.lookup_schema(subject, schema)
    except Exception as error:
        if _not_found(error):
            return None
        raise


def _hint(strategy: SubjectStrategy | None, plan: Sequence[Candidate]) -> str:
    if strategy is SubjectStrategy.TOPIC and len({c.record_name for c in plan}) > 1:
        return (
            "; several record types share this subject (TopicNameStrategy): set the "
            "subject's compatibility to NONE in the registry, or use the record or "
            "topic-record subject strategy"
        )
    return ""


def register(
    client: Registry,
    plan: Sequence[Candidate],
    *,
    level: Level = Level.BACKWARD_TRANSITIVE,
    registry_check: bool = True,
    dry_run: bool = False,
    strategy: SubjectStrategy | None = None,
    schema_factory: Callable[[str], Any] | None = None,
) -> list[Result]:
    """Check, then register, each candidate in order; stop at the first refusal.

    The local check runs over the whole plan before anything is written (each
    candidate against the subject's history plus the plan's earlier candidates), so a
    schema that breaks it registers nothing. The registry's own check runs right
    before each registration; a refusal there stops the run, and the results say
    what was registered before it.
    """
    make_schema = schema_factory or _confluent_schema
    histories = {c.subject: _history(client, c.subject) for c in plan}
    existing: dict[int, Any] = {}
    for index, c in enumerate(plan):
        found = _lookup(client, c.subject, make_schema(_schema_text(c.schema)))
        if found is not None:
            existing[index] = found
            continue
        problems = compatibility_problems(c.schema, histories[c.subject], level)
        if problems:
            message = f"not {level} compatible: " + "; ".join(problems)
            return [Result(c, Status.REFUSED, message=message)]
        histories[c.subject].append(c.schema)

    results: list[Result] = []
    for index, c in enumerate(plan):
        if index in existing:
            found = existing[index]
            results.append(Result(c, Status.EXISTS, found.schema_id, found.version))
            continue
        if dry_run:
            results.append(Result(c, Status.WOULD_REGISTER))
            continue
        schema = make_schema(_schema_text(c.schema))
        checked = registry_check and bool(_history(client, c.subject))
        if checked and not client.test_compatibility(c.subject, schema):
            message = (
                "the registry's compatibility check rejects it against the subject's "
                "latest version" + _hint(strategy, plan)
            )
            results.append(Result(c, Status.REFUSED, message=message))
            return results
        schema_id = client.register_schema(c.subject, schema)
        registered = client.lookup_schema(c.subject, schema)
        results.append(Result(c, Status.REGISTERED, schema_id, registered.version))
    return results


def _confluent_schema(text: str) -> Any:
    from confluent_kafka.schema_registry import Schema

    return Schema(text, SCHEMA_TYPE)


#: A decoder's registry calls run in the poll loop: never wait without bound (the
#: client's default is no timeout), and leave retrying with backoff to the consumer,
#: which holds the partition (the client's own retries sleep up to seconds in the loop).
DECODER_TIMEOUT_S: Final = 10.0
DECODER_MAX_RETRIES: Final = 0


def registry_client(
    url: str,
    basic_auth: str | None = None,
    *,
    timeout_s: float | None = None,
    max_retries: int | None = None,
) -> Any:
    """A SchemaRegistryClient; ``mock://...`` gives confluent-kafka's in-process mock.

    ``timeout_s``/``max_retries`` unset: the client's defaults.
    """
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf: dict[str, Any] = {"url": url}
    if basic_auth:
        conf["basic.auth.user.info"] = basic_auth
    if timeout_s is not None:
        conf["timeout"] = timeout_s
    if max_retries is not None:
        conf["max.retries"] = max_retries
    return SchemaRegistryClient.new_client(conf)


def decoder_registry_client(url: str, basic_auth: str | None = None) -> Any:
    """The client a decoder uses: bounded waits, no retries of its own."""
    return registry_client(
        url, basic_auth, timeout_s=DECODER_TIMEOUT_S, max_retries=DECODER_MAX_RETRIES
    )


def is_mock(url: str) -> bool:
    """confluent-kafka's mock answers no compatibility request (no such endpoint)."""
    return url.startswith("mock://")
