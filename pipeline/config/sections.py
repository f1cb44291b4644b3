"""The settings' fields, one class per section; ``Settings`` combines them.

Each field: its type, default, bounds and description (the configuration reference is
generated from these). Validators across fields and behaviour live on ``Settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import NoDecode

from pipeline.config.choices import AvroDecoder, DeriveAbandonment, LogFormat, OutOfTier
from pipeline.signals.catalog import Tier

#: Connect's createSignals takes at most this many signals per call (its API reference).
MAX_SIGNALS_PER_CALL: Final = 500
#: A source checkout's avro/. An installed wheel has none there (site-packages/avro is the
#: Apache Avro library): the same schemas are then generated in memory from the catalog
#: (pipeline.codec.schemas.schema_texts).
DEFAULT_AVRO_DIR: Final = Path(__file__).resolve().parents[2] / "avro"


class _Section(BaseModel):
    """Fields only: never validated alone, so no schema is built for it (start-up time)."""

    model_config = ConfigDict(defer_build=True)


class KafkaSection(_Section):
    """Kafka: brokers, topics, group, security, fetching."""

    kafka_bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers; unset: start the embedded broker (demo only)."
    )
    topics: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Source topics (JSON list or comma-separated)."
    )
    topic_pattern: str | None = Field(
        None, description="Source topics as a regular expression (instead of topics)."
    )
    group_id: str = Field("connect-signals", description="Consumer group id.")
    group_instance_id: str | None = Field(
        None, description="Static membership id (e.g. the pod name): no rebalance on restart."
    )
    dlq_topic: str = Field("connect-signals-dlq", description="Dead-letter topic.")
    kafka_security_protocol: str | None = Field(
        None, description="security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_ssl_ca_location: str | None = Field(
        None, description="ssl.ca.location: CA certificate(s) of the brokers (PEM file)."
    )
    kafka_ssl_certificate_location: str | None = Field(
        None, description="ssl.certificate.location: client certificate (mutual TLS, PEM)."
    )
    kafka_ssl_key_location: str | None = Field(
        None, description="ssl.key.location: client private key (mutual TLS, PEM)."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="ssl.key.password: passphrase of that key (secret)."
    )
    kafka_sasl_mechanism: str | None = Field(
        None, description="sasl.mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER."
    )
    kafka_sasl_username: str | None = Field(None, description="sasl.username.")
    kafka_sasl_password: SecretStr | None = Field(None, description="sasl.password (secret).")
    kafka_sasl_oauthbearer_client_id: str | None = Field(
        None,
        description="OAUTHBEARER with OIDC client credentials (sasl.oauthbearer.method=oidc): "
        "sasl.oauthbearer.client.id.",
    )
    kafka_sasl_oauthbearer_client_secret: SecretStr | None = Field(
        None, description="sasl.oauthbearer.client.secret (secret)."
    )
    kafka_sasl_oauthbearer_token_endpoint_url: str | None = Field(
        None, description="sasl.oauthbearer.token.endpoint.url: the identity provider's."
    )
    kafka_sasl_oauthbearer_scope: str | None = Field(None, description="sasl.oauthbearer.scope.")
    kafka_sasl_oauthbearer_extensions: str | None = Field(
        None,
        description="sasl.oauthbearer.extensions, e.g. 'logicalCluster=lkc-1,identityPoolId=p-1'.",
    )
    kafka_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka settings for consumer and producer (JSON object).",
    )
    session_timeout_ms: int = Field(
        6_000,
        ge=1_000,
        description="session.timeout.ms (6,000: Apache Kafka's minimum by default; "
        "the group join waits on it, heartbeats run on librdkafka's own thread).",
    )
    fetch_buffer_kbytes: int | None = Field(
        None,
        ge=64,
        description="queued.max.messages.kbytes: librdkafka's prefetch bound; "
        "unset: PIPELINE_MAX_BUFFERED_BYTES / 8.",
    )
    fetch_queue_messages: int = Field(
        10_000,
        ge=100,
        description="queued.min.messages: librdkafka prefetches while fewer are queued "
        "(its own default, 100,000, holds ~50 MB of small events).",
    )


class DecodingSection(_Section):
    """Decoding: Schema Registry, local schemas, limits, decoder."""

    schema_registry_url: str | None = Field(
        None, description="Schema Registry URL (Confluent framing); unset: single-object only."
    )
    schema_registry_basic_auth: SecretStr | None = Field(
        None, description="Schema Registry basic auth user:password (secret)."
    )
    schema_registry_bearer_token: SecretStr | None = Field(
        None, description="Schema Registry bearer token, a static one (secret)."
    )
    schema_registry_oauth_client_id: str | None = Field(
        None, description="Schema Registry bearer tokens from OIDC client credentials: client id."
    )
    schema_registry_oauth_client_secret: SecretStr | None = Field(
        None, description="Its client secret (secret)."
    )
    schema_registry_oauth_token_endpoint_url: str | None = Field(
        None, description="Its token endpoint."
    )
    schema_registry_oauth_scope: str = Field("", description="Its scope.")
    schema_registry_bearer_logical_cluster: str = Field(
        "", description="target-sr-cluster header with bearer auth (Confluent Cloud: lsrc-...)."
    )
    schema_registry_bearer_identity_pool_id: str | None = Field(
        None, description="Confluent-Identity-Pool-Id header with bearer auth (Confluent Cloud)."
    )
    schema_registry_ssl_ca_location: str | None = Field(
        None, description="CA certificate(s) of the Schema Registry (PEM file or directory)."
    )
    schema_registry_ssl_certificate_location: str | None = Field(
        None, description="Client certificate for the Schema Registry (mutual TLS, PEM)."
    )
    schema_registry_ssl_key_location: str | None = Field(
        None, description="Client private key for the Schema Registry (mutual TLS, PEM)."
    )
    schema_registry_ssl_key_password: SecretStr | None = Field(
        None, description="Passphrase of that key (secret)."
    )
    avro_dir: Path = Field(
        DEFAULT_AVRO_DIR,
        description="Directory of the generated .avsc (default: avro/ of a source checkout, "
        "else the same schemas built from the catalog in memory).",
    )
    max_event_bytes: int = Field(
        1024 * 1024, ge=1_024, description="Larger record values are dead-lettered undecoded."
    )
    avro_decoder: AvroDecoder = Field(
        AvroDecoder.AUTO,
        description="`auto`: cavro (2-4x faster) reads the schemas whose output it gives "
        "exactly as fastavro does (the generated ones, either edition), fastavro the rest and "
        "whatever cavro cannot read; `fastavro`: fastavro only (cavro not even imported).",
    )


class ConnectSection(_Section):
    """The Connect API: endpoint, credentials, tier."""

    connect_url: str = Field(
        "http://127.0.0.1:8080/graphql", description="Connect GraphQL endpoint."
    )
    connect_api_key: SecretStr | None = Field(None, description="Connect API key (secret).")
    connect_auth_header: str = Field(
        "X-API-Key", description="Header carrying the key (Connect's API: X-API-Key)."
    )
    connect_auth_scheme: str = Field(
        "", description="Scheme before the key ('' sends the bare key, e.g. 'Bearer')."
    )
    default_app_key: SecretStr | None = Field(
        None, description="appKey for events without their own (secret)."
    )
    allow_anonymous: bool = Field(False, description="Send signals with no identity.")
    subscription_tier: Tier = Field(Tier.ULTIMATE, description="Pro, Premium or Ultimate.")
    out_of_tier: OutOfTier = Field(
        OutOfTier.DEAD_LETTER, description="dead_letter or drop types outside the tier."
    )


class DeliverySection(_Section):
    """Delivery: batches, concurrency, retries, memory, commits, drain."""

    batch_max_signals: int = Field(
        500, ge=1, description=f"Signals per call (Connect takes at most {MAX_SIGNALS_PER_CALL})."
    )
    batch_max_bytes: int = Field(
        512 * 1024, ge=1_024, description="Request body bytes per call (at most)."
    )
    linger_ms: int = Field(25, ge=0, description="Wait this long to fill a batch.")
    max_in_flight_batches: int = Field(4, ge=1, le=256, description="Concurrent calls.")
    adaptive_concurrency: bool = Field(
        True,
        description="Calls in flight adapt between 1 and PIPELINE_MAX_IN_FLIGHT_BATCHES (AIMD: "
        "+1 after a round of good answers, halved on 429/503/timeouts or a latency rise); "
        "false: always the maximum.",
    )
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest a call may take, from sending to the whole answer (a server "
        "trickling bytes included); each read is bounded by it too.",
    )
    split_after_timeouts: int = Field(
        3,
        ge=0,
        description="A batch that times out (or gets 504) this many times in a row is sent "
        "as two halves (0: never split).",
    )
    retry_initial_backoff_ms: int = Field(100, ge=1, description="First retry delay.")
    retry_max_backoff_ms: int = Field(30_000, ge=1, description="Retry delay ceiling.")
    max_buffered_bytes: int = Field(
        32 * 1024 * 1024,
        ge=64 * 1024,
        description="Pause partitions when buffered + in-flight records pass this "
        "(their Kafka bytes and their signals' JSON).",
    )
    commit_interval_ms: int = Field(1_000, ge=10, description="Offset commit period.")
    drain_timeout_s: float = Field(
        25.0, ge=0, description="On shutdown, time to finish in-flight calls."
    )


class LedgerSection(_Section):
    """The delivery ledger and transactions."""

    ledger_enabled: bool = Field(
        True, description="Skip signals the ledger says Connect already accepted."
    )
    ledger_topic: str | None = Field(
        None, description="Ledger topic (compacted); unset: '<group_id>-ledger'."
    )
    ledger_retention_hours: float = Field(
        168.0, gt=0, description="Keys accepted within this window are never sent again."
    )
    ledger_max_keys: int = Field(
        1_000_000, ge=1_000, description="In-memory ledger bound, ~24 B a key (oldest evicted)."
    )
    ledger_format: int = Field(
        3,
        ge=2,
        le=3,
        description="Ledger records written: 3 = one per delivered batch and source partition, "
        "2 = one per signal (the first step of an upgrade from a version that cannot read 3; "
        "docs/idempotency.md).",
    )
    transactions: bool = Field(
        True, description="Ledger, dead letters and offsets in one Kafka transaction."
    )
    transactional_id: str | None = Field(
        None, description="Stable per replica; unset: '<group_id>-<group_instance_id|hostname>'."
    )
    transaction_timeout_ms: int = Field(
        60_000, ge=1_000, description="transaction.timeout.ms of the producer."
    )


class SessionSection(_Section):
    """Derived abandonment (pipeline.sessions)."""

    derive_abandonment: DeriveAbandonment = Field(
        DeriveAbandonment.OFF,
        description="Derive abandonment signals from sessions: off, cart, browse or both "
        "(Premium and Ultimate tiers; leave off when producers send them themselves).",
    )
    session_gap_s: float = Field(
        1800.0, gt=0, description="A session expires after this much inactivity (event time)."
    )
    session_grace_s: float = Field(
        60.0, ge=0, description="Events this late (event time) still count towards a session."
    )
    session_max_open: int = Field(
        100_000,
        ge=100,
        description="Open sessions per partition; past it the longest idle closes early.",
    )
    session_store: Literal["memory", "rocksdb"] = Field(
        "memory",
        description="Where open sessions live between commits: memory, or rocksdb (on disk, "
        "for more than memory holds; `pip install .[rocksdb]`). The changelog topic is the "
        "source of truth either way: the on-disk state is rebuilt from it on assign.",
    )
    session_store_path: Path = Field(
        Path("session-state"),
        description="Directory of the rocksdb session store (one database per assigned "
        "partition, under a directory per process, removed on revoke and at exit).",
    )


class OperationsSection(_Section):
    """Operations: logs, tracing, the HTTP endpoint, workers."""

    log_format: LogFormat = Field(LogFormat.JSON, description="json or console.")
    log_level: str = Field(
        "INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)."
    )
    tracing: bool = Field(
        False,
        description="OpenTelemetry traces (needs the otel extra): a span per createSignals "
        "call and per dead letter, the producer's traceparent continued; OTLP/HTTP "
        "exporter configured by the standard OTEL_* variables.",
    )
    http_port: int = Field(
        9400, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz (0: off)."
    )
    http_host: str = Field(
        "127.0.0.1",
        description="Address of that endpoint; '::' listens on IPv6 and IPv4 (dual stack), "
        "0.0.0.0 on IPv4 only.",
    )
    liveness_timeout_s: float = Field(
        60.0, gt=0, description="/healthz fails when the poll loop has not turned for this long."
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Consumer processes in the group under one supervisor (`run` only): "
        "one per core the pod has. The supervisor serves the aggregated /healthz, /readyz "
        "and /metrics on http_port and drains every worker on SIGTERM.",
    )
