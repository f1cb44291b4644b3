"""Shared fixtures: a real Kafka-protocol broker for the whole session.

Every broker test runs against ``PIPELINE_KAFKA_BOOTSTRAP_SERVERS`` when it is set (a
real Apache Kafka; ``KAFKA_BOOTSTRAP_SERVERS`` still works for one release), otherwise
against the embedded Tansu broker (``devtools.stack``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs a broker and the simulator")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    from devtools.stack import kafka

    with kafka() as running:
        yield running.bootstrap_servers
