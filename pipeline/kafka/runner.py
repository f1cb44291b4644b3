"""Assembly: settings in, a running consumer out. The one place that builds the Kafka
clients and the HTTP client (``build_clients``) and wires the process together; the
group consumer of ``connect-pipeline run`` is made earlier, subscribed at once
(``group_join``), and handed in.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import urllib.request
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import structlog
from confluent_kafka import Consumer, Producer

from pipeline.config import Settings
from pipeline.connect.client import ConnectClient, RetryPolicy
from pipeline.kafka.group_join import JoiningConsumer
from pipeline.kafka.group_join import consumer_config as consumer_config  # re-exported
from pipeline.kafka.records import RunSummary
from pipeline.kafka.stops import ConsumerStopped
from pipeline.ops import tracing
from pipeline.ops.health import HealthServer
from pipeline.signals.mapping import MappingOptions
from pipeline.signals.processor import EventProcessor

if TYPE_CHECKING:
    from pipeline.kafka.consumer import SignalConsumer

log = structlog.get_logger("pipeline.kafka.runner")


def producer_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **settings.kafka_common(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,  # pipeline.kafka.ledger.PRODUCER_LINGER_MS
    }
    if settings.transactions:
        conf["transactional.id"] = settings.replica_transactional_id()
        conf["transaction.timeout.ms"] = settings.transaction_timeout_ms
        # the commit acknowledges every record of a transaction: report failures only
        conf["delivery.report.only.error"] = True
    return conf


class Clients(NamedTuple):
    """What a consumer talks to: Kafka (both ways) and Connect."""

    consumer: Consumer
    producer: Producer
    connect: ConnectClient


def _auth_value(settings: Settings) -> str | None:
    if settings.connect_api_key is None:
        return None
    key = settings.connect_api_key.get_secret_value()
    return f"{settings.connect_auth_scheme} {key}" if settings.connect_auth_scheme else key


def record_headers(ref: Any) -> tracing.Headers | None:
    """A batch's ref (a ``Pending``) -> its record's headers: the producer's traceparent."""
    headers: tracing.Headers | None = ref.message.headers()
    return headers


def tls_verify(url: str, *, trust_env: bool = True) -> ssl.SSLContext | bool:
    """The Connect client's ``verify``: the system's CA bundle only where TLS is used.

    httpx reads and parses the CA bundle (0.05-0.35 s) when a client is made, even for
    an ``http://`` URL that never opens TLS. For such a URL, with no proxy from the
    environment (the one way TLS could still be spoken), the client gets a context that
    trusts no certificate: it costs nothing and, should TLS ever be tried, fails closed.
    """
    if urlsplit(url).scheme.lower() != "http":
        return True  # https: httpx's default context (certifi's CA bundle)
    if trust_env and urllib.request.getproxies():
        return True  # a proxy may be reached over TLS: verify it as usual
    # certificates required, host names checked, no CA loaded: nothing can pass
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def build_clients(
    settings: Settings,
    *,
    bounded: bool,
    on_stats: Callable[[str], None],
    on_call: Callable[[str, float, int], None],
    on_failing: Callable[[bool], None],
    stop: threading.Event,
    joined: JoiningConsumer | None = None,
) -> Clients:
    """The Kafka consumer and producer and the Connect client of one consumer;
    ``joined``: the group member ``connect-pipeline run`` subscribed first."""
    kafka_logger = logging.getLogger("librdkafka")
    consumer: Consumer
    if joined is not None:
        if bounded:
            raise ValueError("a bounded read assigns its partitions: it joins no group")
        joined.on_stats(on_stats)
        consumer = joined
    else:
        eof = {"enable.partition.eof": True} if bounded else {}
        consumer = Consumer(
            {**consumer_config(settings), **eof, "stats_cb": on_stats, "logger": kafka_logger}
        )
    producer = Producer({**producer_config(settings), "logger": kafka_logger})
    connect = ConnectClient(
        settings.connect_url,
        settings.connect_auth_header,
        _auth_value(settings),
        timeout_s=settings.request_timeout_s,
        max_connections=settings.max_in_flight_batches,
        retry=RetryPolicy(
            settings.retry_initial_backoff_ms / 1000, settings.retry_max_backoff_ms / 1000
        ),
        stop=stop,
        on_call=on_call,
        on_failing=on_failing,
        split_after_timeouts=settings.split_after_timeouts,
        record_headers=record_headers,
        verify=tls_verify(settings.connect_url),
    )
    return Clients(consumer, producer, connect)


def build_decoder(settings: Settings, *, off_loop: bool = False) -> object:
    """The event decoder; ``off_loop``: registry look-ups on threads of their own (a
    record whose schema is not known yet holds its partition, not the loop)."""
    from pipeline.codec.avro import EventDecoder, SchemaStore
    from pipeline.codec.registry_lookups import BackgroundLookups

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
        lookups=BackgroundLookups if off_loop else None,
    )


def build_processor(settings: Settings, decoder: object | None = None) -> EventProcessor:
    app_key = settings.default_app_key.get_secret_value() if settings.default_app_key else None
    return EventProcessor(
        decoder or build_decoder(settings, off_loop=True),  # type: ignore[arg-type]
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


def warm_up(name: str, work: Callable[[], object]) -> threading.Thread:
    """``work`` on a daemon thread while the group join waits: what the first record
    would otherwise pay. A failure is logged and forgotten (the first record does the
    work again, or falls back), never a reason not to start."""

    def attempt() -> None:
        try:
            work()
        except Exception as error:  # a warm-up only: the pipeline starts regardless
            log.warning("warm-up failed", warm_up=name, error=repr(error))

    thread = threading.Thread(target=attempt, name=name, daemon=True)
    thread.start()
    return thread


def preload_accelerated(settings: Settings) -> threading.Thread | None:
    """Import cavro (with numpy, 0.15-0.3 s) on a thread while the group join waits,
    rather than on the consumer's thread at the first record; None if it is not used."""
    if settings.avro_decoder != "auto":
        return None
    from pipeline.codec import accelerated

    return warm_up("cavro-import", accelerated.available)


def run(
    settings: Settings,
    *,
    stop_after_idle_s: float | None = None,
    joined: JoiningConsumer | None = None,
) -> RunSummary:
    """Build the consumer and run it until stopped. ``joined``: a group member already
    subscribed (``connect-pipeline run`` starts the join first), so that all of this is
    built while the join waits."""
    server = None
    consumer = None
    try:
        from pipeline.ops.logs import configure_logging

        configure_logging(settings)
        preload_accelerated(settings)
        from pipeline.kafka.consumer import SignalConsumer

        tracing.configure(settings.tracing)  # off by default; on: needs the otel extra
        consumer = SignalConsumer(settings, build_processor(settings), joined=joined)
        install_signal_handlers(consumer)
        server = start_ops_server(settings, consumer)
        return consumer.run(stop_after_idle_s=stop_after_idle_s)
    except ConsumerStopped as error:  # logged by the consumer; the reason, not a traceback
        raise SystemExit(f"connect-pipeline: stopped uncommitted: {error}") from None
    finally:
        if consumer is None and joined is not None:
            joined.close()  # leave the group now, not after the session timeout
        if server is not None:
            server.stop()
        tracing.shutdown()  # exports the spans still buffered
