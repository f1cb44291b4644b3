"""A Tansu broker of its own whose named topics refuse every record, and the committed
offset of partition 0 of a group: for the faults of topics that cannot be written."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from devtools.broker import EmbeddedBroker

#: Tansu validates the value of every record of a topic with a schema file against it
#: (its JSON schema files describe ``{"key": ..., "value": ...}``): no record passes.
STRICT_SCHEMA = (
    '{"type": "object", "properties": {"value": {"type": "object", "required": ["never"]}}}'
)


@contextmanager
def strict_broker(workdir: Path, topics: tuple[str, ...]) -> Iterator[str]:
    """A running broker (its bootstrap servers) refusing every record of ``topics``
    (INVALID_RECORD)."""
    (workdir / "schemas").mkdir()
    for topic in topics:
        (workdir / "schemas" / f"{topic}.json").write_text(STRICT_SCHEMA)
    schemas = ["--schema-registry", "file://./schemas"]
    with EmbeddedBroker(log_dir=workdir, extra_args=schemas, cwd=workdir) as broker:
        yield broker.bootstrap_servers


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offset of ``topic``'s partition 0 (negative: none)."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = reader.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        reader.close()
    return tp.offset
