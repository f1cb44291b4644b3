"""Shared fixtures: a real Kafka-protocol broker for the whole session.

Every broker test runs against ``KAFKA_BOOTSTRAP_SERVERS`` when it is set (a real
Apache Kafka), otherwise against the embedded Tansu broker started here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs a broker and the simulator")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    from devtools.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers
