"""``connect-pipeline produce``: write the demo clickstream to a Kafka topic.

For docker-compose's demo producer and for trying a deployment: the same synthetic
clickstream as ``demo`` (a few percent invalid, some earlier-edition events), Avro
encoded with the Schema Registry's framing when a registry URL is given, Avro
single-object encoding otherwise.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click

from devtools.clickstream import clickstream
from devtools.producer import EventEncoder, produce_events
from pipeline.config import DEFAULT_AVRO_DIR


def _ensure_topic(bootstrap: str, topic: str, partitions: int, timeout_s: float) -> None:
    """Create the topic unless it exists, waiting for the broker to come up."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if topic in admin.list_topics(timeout=5).topics:
                return
            future = admin.create_topics([NewTopic(topic, partitions, 1)])[topic]
            future.result(30)
            return
        except KafkaException as error:
            if "TOPIC_ALREADY_EXISTS" in str(error):
                return
            if time.monotonic() > deadline:
                raise click.ClickException(f"cannot reach Kafka at {bootstrap}: {error}") from None
            time.sleep(2)


@click.command()
@click.option(
    "--bootstrap-servers",
    envvar="PIPELINE_KAFKA_BOOTSTRAP_SERVERS",
    required=True,
    help="Kafka bootstrap servers [env PIPELINE_KAFKA_BOOTSTRAP_SERVERS].",
)
@click.option("--topic", default="clickstream", show_default=True)
@click.option("--partitions", default=6, show_default=True, help="When creating the topic.")
@click.option("--events", default=5_000, show_default=True, help="Events per round.")
@click.option("--seed", default=7, show_default=True, help="First round's seed (then +1).")
@click.option("--invalid-ratio", default=0.03, show_default=True)
@click.option(
    "--schema-registry-url",
    envvar="PIPELINE_SCHEMA_REGISTRY_URL",
    default=None,
    help="Register the schemas and use Confluent framing [env PIPELINE_SCHEMA_REGISTRY_URL].",
)
@click.option(
    "--every",
    type=float,
    default=0.0,
    help="Produce a new round every this many seconds, until stopped (0: one round).",
)
@click.option("--wait", default=120.0, show_default=True, help="Seconds to wait for Kafka.")
@click.option(
    "--avro-dir",
    envvar="PIPELINE_AVRO_DIR",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=DEFAULT_AVRO_DIR,
    help="The generated schemas [env PIPELINE_AVRO_DIR].",
)
def produce(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    events: int,
    seed: int,
    invalid_ratio: float,
    schema_registry_url: str | None,
    every: float,
    wait: float,
    avro_dir: Path,
) -> None:
    """Write the synthetic demo clickstream to TOPIC."""
    _ensure_topic(bootstrap_servers, topic, partitions, wait)
    registry = None
    if schema_registry_url:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        registry = SchemaRegistryClient({"url": schema_registry_url})
    encoder = EventEncoder(avro_dir, registry)
    round_number = 0
    while True:
        start = datetime.now(UTC)  # event times are now, so end-to-end latency is real
        stream = clickstream(
            events, seed=seed + round_number, invalid_ratio=invalid_ratio, start=start
        )
        count = produce_events(bootstrap_servers, topic, stream, encoder)
        click.echo(f"produced {count} events to {topic}", err=True)
        round_number += 1
        if every <= 0:
            return
        time.sleep(every)
