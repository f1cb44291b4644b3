"""One Kafka transaction per commit cycle: ledger records, dead letters and offsets.

The consumer keeps a transaction open; every commit interval it adds the committable
offsets (``send_offsets_to_transaction`` with the group's metadata, so a zombie of an
older generation is fenced) and commits, then begins the next. A crash therefore
never leaves the ledger, the dead-letter topic and the offsets disagreeing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.kafka.stops import UNCOMMITTED, ConsumerStopped, is_refused_for_good

log = structlog.get_logger("pipeline.kafka.transactions")

TIMEOUT_S: Final = 30.0
RETRIES: Final = 5


class TransactionFatal(ConsumerStopped):
    """The producer cannot go on (fenced by a newer instance, or a fatal broker error)."""


class TransactionRefused(TransactionFatal):
    """A topic refused a record of the transaction for good: every retry would abort and
    re-read the same records again."""


#: Fencing, however it surfaces: librdkafka does not always flag it fatal at once (an
#: abort then hangs until it times out).
FENCED: Final = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


def is_fatal(error: KafkaError) -> bool:
    return bool(error.fatal()) or error.code() in FENCED


class Transactions:
    """The open transaction of one consumer's producer."""

    def __init__(self, producer: Producer, consumer: Consumer) -> None:
        self._producer = producer
        self._consumer = consumer
        self.commits = 0
        self.aborts = 0

    def start(self) -> None:
        """Fence any previous incarnation of this transactional.id, then begin."""
        for attempt in range(RETRIES):
            try:
                self._producer.init_transactions(TIMEOUT_S)
                break
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                if not error.retriable() or attempt == RETRIES - 1:
                    raise TransactionFatal(str(error)) from exception
                log.warning("init_transactions retried", error=str(error))
        self._producer.begin_transaction()

    def commit(self, offsets: list[TopicPartition]) -> bool:
        """Commit the open transaction with these offsets and begin the next one.

        Returns False when the transaction had to be aborted: everything produced in
        it is void and the caller must re-read from the committed offsets.
        """
        for attempt in range(RETRIES):
            try:
                if offsets:
                    metadata = self._consumer.consumer_group_metadata()
                    self._producer.send_offsets_to_transaction(offsets, metadata, TIMEOUT_S)
                self._producer.commit_transaction(TIMEOUT_S)
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                if is_fatal(error):
                    raise TransactionFatal(str(error)) from exception
                if is_refused_for_good(error):
                    self.abort(str(error))
                    raise TransactionRefused(
                        f"a record of the transaction was refused: {error.str()} "
                        f"[{error.name()}]; {UNCOMMITTED}"
                    ) from exception
                if error.txn_requires_abort():
                    self.abort(str(error))
                    return False
                if not error.retriable() or attempt == RETRIES - 1:
                    self.abort(str(error))
                    return False
                log.warning("transaction commit retried", error=str(error))
                continue
            self.commits += 1
            self._producer.begin_transaction()
            return True
        return False  # pragma: no cover (the loop returns)

    def abort(self, reason: str) -> None:
        log.warning("transaction aborted: re-reading from the committed offsets", reason=reason)
        self.aborts += 1
        self._call(lambda: self._producer.abort_transaction(TIMEOUT_S))
        self._producer.begin_transaction()

    @staticmethod
    def _call(operation: Callable[[], object]) -> None:
        try:
            operation()
        except KafkaException as exception:
            error: KafkaError = exception.args[0]
            raise TransactionFatal(str(error)) from exception
