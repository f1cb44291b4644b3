"""The dead-letter topic's start check: it exists (created like the ledger) and is ours."""

from __future__ import annotations

from typing import Any, Final

import structlog
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from pipeline.kafka.dead_letters import DeadLetterUnwritable

log = structlog.get_logger("pipeline.kafka.dead_letter_topic")

TIMEOUT_S: Final = 30.0


def ensure_dead_letter_topic(kafka_conf: dict[str, Any], topic: str) -> None:
    """Raise ``DeadLetterUnwritable`` naming the topic and the cause, before any read.

    An absent topic is created with the broker's defaults (what auto-creation would
    do); an invalid name, a refused creation or a topic we may not see stops the start.
    Refusals at run time (a deleted topic, a lost ACL) stop the consumer uncommitted.
    """
    admin = AdminClient(kafka_conf)
    try:
        found = admin.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    except Exception as error:  # an invalid name can be refused by the client itself
        raise _unwritable(topic, str(error)) from None
    if found is not None and found.error is None and found.partitions:
        return
    problem = None if found is None else found.error
    if problem is not None and problem.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
        raise _unwritable(topic, f"{problem.str()} [{problem.name()}]")
    futures = admin.create_topics([NewTopic(topic, -1, -1)], request_timeout=TIMEOUT_S)
    try:
        futures[topic].result(TIMEOUT_S)
        log.info("dead-letter topic created", topic=topic)
    except Exception as created:  # created meanwhile by another replica: fine
        if "TOPIC_ALREADY_EXISTS" not in str(created) and "already exists" not in str(created):
            raise _unwritable(topic, f"absent, and creating it failed: {created}") from None


def _unwritable(topic: str, cause: str) -> DeadLetterUnwritable:
    return DeadLetterUnwritable(
        f"dead-letter topic {topic!r} cannot be written: {cause} (PIPELINE_DLQ_TOPIC)"
    )
