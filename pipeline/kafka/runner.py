"""Assembly: settings in, a running consumer out. The only place that wires parts."""

from __future__ import annotations

import signal
from types import FrameType

from pipeline.config import Settings
from pipeline.kafka.consumer import RunSummary, SignalConsumer
from pipeline.kafka.stops import ConsumerStopped
from pipeline.ops.health import HealthServer
from pipeline.signals.mapping import MappingOptions
from pipeline.signals.processor import EventProcessor


def build_decoder(settings: Settings) -> object:
    from pipeline.codec.avro import EventDecoder, SchemaStore

    registry = None
    if settings.schema_registry_url:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        from pipeline.codec.registry import DECODER_MAX_RETRIES, DECODER_TIMEOUT_S

        # URL, TLS, basic or bearer auth from the settings; the decoder's bounded waits
        conf = settings.registry_config()
        conf |= {"timeout": DECODER_TIMEOUT_S, "max.retries": DECODER_MAX_RETRIES}
        registry = SchemaRegistryClient.new_client(conf)
    store = SchemaStore.from_directory(settings.avro_dir)
    return EventDecoder(
        store,
        registry,
        max_value_bytes=settings.max_event_bytes,
        accelerate=settings.avro_decoder == "auto",
    )


def build_processor(settings: Settings, decoder: object | None = None) -> EventProcessor:
    app_key = settings.default_app_key.get_secret_value() if settings.default_app_key else None
    return EventProcessor(
        decoder or build_decoder(settings),  # type: ignore[arg-type]
        MappingOptions(app_key, settings.allow_anonymous),
        settings.subscription_tier,
        settings.out_of_tier,
    )


def install_signal_handlers(consumer: SignalConsumer) -> None:
    """SIGTERM (Kubernetes) and SIGINT (a terminal) stop polling, drain and commit."""

    def handle(signum: int, frame: FrameType | None) -> None:
        consumer.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def start_ops_server(settings: Settings, consumer: SignalConsumer) -> HealthServer | None:
    """/metrics, /healthz and /readyz on PIPELINE_HTTP_HOST:PIPELINE_HTTP_PORT (0: off)."""
    if settings.http_port == 0:
        return None
    from pipeline.ops.metrics import CONTENT_TYPE

    metrics = consumer.metrics
    return HealthServer(
        settings.http_host,
        settings.http_port,
        consumer.health,
        lambda: (metrics.exposition(), CONTENT_TYPE),
    ).start()


def run(settings: Settings, *, stop_after_idle_s: float | None = None) -> RunSummary:
    from pipeline.ops.logs import configure_logging

    configure_logging(settings)
    consumer = SignalConsumer(settings, build_processor(settings))
    install_signal_handlers(consumer)
    server = start_ops_server(settings, consumer)
    try:
        return consumer.run(stop_after_idle_s=stop_after_idle_s)
    except ConsumerStopped as error:  # logged by the consumer; the reason, not a traceback
        raise SystemExit(f"connect-pipeline: stopped uncommitted: {error}") from None
    finally:
        if server is not None:
            server.stop()
