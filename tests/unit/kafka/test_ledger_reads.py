"""The ledger readers' consumer configuration (the loader's and the replay join's)."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaException

from pipeline.kafka.ledger_reads import reader_config

# a live consumer's group timeouts, as PIPELINE_KAFKA_CONFIG may set them
GROUP_CONF = {
    "bootstrap.servers": "127.0.0.1:9",
    "max.poll.interval.ms": 6_000,
    "session.timeout.ms": 45_000,
    "group.instance.id": "replica-0",
}


def test_librdkafka_refuses_the_group_timeouts_a_reader_would_inherit() -> None:
    with pytest.raises(KafkaException, match=r"max\.poll\.interval\.ms"):
        Consumer({**GROUP_CONF, "group.id": "g"})


def test_a_ledger_reader_leaves_the_group_settings_out_and_can_be_created() -> None:
    conf = reader_config(GROUP_CONF, "ledger-join")
    assert not {"max.poll.interval.ms", "session.timeout.ms", "group.instance.id"} & set(conf)
    assert conf["bootstrap.servers"] == "127.0.0.1:9"
    assert conf["group.id"].startswith("ledger-join-") and conf["enable.partition.eof"]
    Consumer(conf).close()  # librdkafka accepts it
