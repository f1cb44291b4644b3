"""The pipeline's own topics (ledger, session changelog): created when absent, waited for."""

from __future__ import annotations

import time
from typing import Any

import structlog
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

log = structlog.get_logger("pipeline.kafka.topics")


def ensure_topic(
    kafka_conf: dict[str, Any], topic: str, partitions: int, config: dict[str, str], what: str
) -> int:
    """Create ``topic`` when absent (``what`` names it in logs and errors); its partitions."""
    admin = AdminClient(kafka_conf)
    existing = admin.list_topics(timeout=30).topics.get(topic)
    if existing is not None and existing.partitions:
        return len(existing.partitions)
    futures = admin.create_topics([NewTopic(topic, partitions, -1, config=config)])
    try:
        futures[topic].result(30)
        log.info(f"{what} topic created", topic=topic, partitions=partitions)
    except Exception as error:  # created meanwhile by another replica
        if "TOPIC_ALREADY_EXISTS" not in str(error) and "already exists" not in str(error):
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        created = admin.list_topics(topic, timeout=10).topics.get(topic)
        if created is not None and created.partitions and created.error is None:
            return len(created.partitions)
        time.sleep(0.2)
    raise RuntimeError(f"{what} topic {topic} did not appear")
