"""Why a consumer stops uncommitted: what follows its last commit is read again."""

from __future__ import annotations

from typing import Final

from confluent_kafka import KafkaError

#: How every stop uncommitted ends its message.
UNCOMMITTED: Final = (
    "stopping uncommitted: the records from the last commit on are read again after a restart"
)


class ConsumerStopped(Exception):
    """A condition no retry can fix: stop, commit nothing more, let an operator act.

    The message names what failed and why; ``connect-pipeline run`` prints it and exits
    non-zero. A restart re-reads from the committed offsets.
    """


#: Refusals that no retry fixes: the topic is gone, invalid, or not ours to write.
REFUSALS: Final = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.INVALID_RECORD,
        KafkaError.POLICY_VIOLATION,
    }
)


def is_refusal(error: KafkaError) -> bool:
    """A write (a dead letter, a ledger record) the topic refused for good: the caller
    stops uncommitted.

    An explicit list: anything else (timeouts, purges after an abort, transport) is
    retried, so a transient error never stops the consumer.
    """
    return error.code() in REFUSALS


def is_refused_for_good(error: KafkaError) -> bool:
    """A refusal, or a record over the topic's size limit: no retry writes it."""
    return is_refusal(error) or error.code() == KafkaError.MSG_SIZE_TOO_LARGE
