"""Configuration: environment variables (prefix ``PIPELINE_``) and an optional TOML file.

Validated at start; an invalid setting stops the process with a message that names
the environment variable and the rule, and so does an unknown ``PIPELINE_*`` variable
(a typo would otherwise be ignored silently). Secrets are ``SecretStr``: they print as
``**********`` wherever a setting is shown; so do credentials inside the URLs and
secret-looking ``PIPELINE_KAFKA_CONFIG`` values. Secrets can also be files, one per
setting, named like the variable, in ``PIPELINE_SECRETS_DIR`` (default
``/run/secrets/pipeline``: a mounted Kubernetes Secret).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from pipeline.signals.catalog import Tier

ENV_PREFIX: Final = "PIPELINE_"
CONFIG_FILE_ENV: Final = "PIPELINE_CONFIG_FILE"
#: Connect's createSignals takes at most this many signals per call (its API reference).
MAX_SIGNALS_PER_CALL: Final = 500
SECRETS_DIR_ENV: Final = "PIPELINE_SECRETS_DIR"
#: Where file-mounted secrets are looked for unless PIPELINE_SECRETS_DIR says otherwise.
DEFAULT_SECRETS_DIR: Final = Path("/run/secrets/pipeline")
#: PIPELINE_* variables that are not settings but are read by a command or the test
#: runner: never reported as unknown.
OTHER_VARIABLES: Final = frozenset(
    {
        CONFIG_FILE_ENV,
        SECRETS_DIR_ENV,
        "PIPELINE_SUBJECT_NAME_STRATEGY",  # connect-pipeline avro register
        "PIPELINE_REQUIRE_CHECKS",  # make test: the static checks must run
    }
)
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
MASK: Final = "**********"
#: A source checkout's avro/. An installed wheel has none there (site-packages/avro is the
#: Apache Avro library): the same schemas are then generated in memory from the catalog
#: (pipeline.codec.schemas.schema_texts).
DEFAULT_AVRO_DIR: Final = Path(__file__).resolve().parent.parent / "avro"


class OutOfTier(StrEnum):
    """What happens to signal types outside the subscription tier."""

    DEAD_LETTER = "dead_letter"
    DROP = "drop"


class DeriveAbandonment(StrEnum):
    """Which abandonment signals the session stage derives."""

    OFF = "off"
    CART = "cart"
    BROWSE = "browse"
    BOTH = "both"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class AvroDecoder(StrEnum):
    """Which library reads Avro bodies (fastavro is the reference either way)."""

    AUTO = "auto"  # cavro where installed and known identical, else fastavro
    FASTAVRO = "fastavro"


class Settings(BaseSettings):
    """Every setting of the consumer. Environment: ``PIPELINE_<NAME>`` (upper case)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True
    )

    # --- Kafka ---------------------------------------------------------------------
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

    # --- decoding ----------------------------------------------------------------------
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

    # --- Connect API ---------------------------------------------------------------------
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

    # --- delivery --------------------------------------------------------------------------
    batch_max_signals: int = Field(
        250, ge=1, description=f"Signals per call (Connect takes at most {MAX_SIGNALS_PER_CALL})."
    )
    batch_max_bytes: int = Field(
        512 * 1024, ge=1_024, description="Request body bytes per call (at most)."
    )
    linger_ms: int = Field(50, ge=0, description="Wait this long to fill a batch.")
    max_in_flight_batches: int = Field(8, ge=1, le=256, description="Concurrent calls.")
    request_timeout_s: float = Field(10.0, gt=0, description="Timeout of one call.")
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

    # --- delivery ledger and transactions ----------------------------------------------------
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
    transactions: bool = Field(
        True, description="Ledger, dead letters and offsets in one Kafka transaction."
    )
    transactional_id: str | None = Field(
        None, description="Stable per replica; unset: '<group_id>-<group_instance_id|hostname>'."
    )
    transaction_timeout_ms: int = Field(
        60_000, ge=1_000, description="transaction.timeout.ms of the producer."
    )

    # --- derived abandonment (pipeline.sessions) ----------------------------------------------
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

    # --- operations --------------------------------------------------------------------------
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

    @field_validator("topics", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("topic_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value

    @field_validator("batch_max_signals")
    @classmethod
    def _connect_call_limit(cls, value: int) -> int:
        if value > MAX_SIGNALS_PER_CALL:
            raise ValueError(
                f"at most {MAX_SIGNALS_PER_CALL}: Connect's createSignals takes at most "
                f"{MAX_SIGNALS_PER_CALL} signals per call, got {value}"
            )
        return value

    @field_validator("connect_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return _one_of(value, LOG_LEVELS)

    @field_validator("kafka_security_protocol")
    @classmethod
    def _security_protocol(cls, value: str | None) -> str | None:
        return None if value is None else _one_of(value, SECURITY_PROTOCOLS)

    @field_validator("kafka_sasl_mechanism")
    @classmethod
    def _sasl_mechanism(cls, value: str | None) -> str | None:
        return None if value is None else _one_of(value, SASL_MECHANISMS)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if bool(self.topics) == bool(self.topic_pattern):
            raise ValueError("set exactly one of PIPELINE_TOPICS or PIPELINE_TOPIC_PATTERN")
        if self.dlq_topic in self.topics:
            raise ValueError("PIPELINE_DLQ_TOPIC must not be one of PIPELINE_TOPICS")
        if (
            self.derive_abandonment is not DeriveAbandonment.OFF
            and self.subscription_tier is Tier.PRO
        ):
            raise ValueError(
                "PIPELINE_DERIVE_ABANDONMENT needs PIPELINE_SUBSCRIPTION_TIER Premium or "
                "Ultimate (Pro does not include abandonment signals)"
            )
        for problem in _security_problems(self):
            raise ValueError(problem)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, environment, secret files, then the TOML file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets_dir = secrets_directory()
        if secrets_dir is not None:
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def ledger_topic_name(self) -> str:
        return self.ledger_topic or f"{self.group_id}-ledger"

    @property
    def fetch_queue_kbytes(self) -> int:
        """librdkafka's prefetch bound, within the memory budget unless set explicitly."""
        if self.fetch_buffer_kbytes is not None:
            return self.fetch_buffer_kbytes
        return max(1024, self.max_buffered_bytes // 8 // 1024)

    @property
    def source_topics(self) -> list[str]:
        """What to subscribe to: topic names, or ``^regex`` as librdkafka expects."""
        if self.topic_pattern:
            pattern = self.topic_pattern
            return [pattern if pattern.startswith("^") else "^" + pattern]
        return list(self.topics)

    def as_environment(self) -> dict[str, str]:
        """``PIPELINE_*`` variables that configure a child process exactly like these
        settings (secrets in clear: for a child's environment, never for printing)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            current = getattr(self, name)
            if isinstance(current, SecretStr):
                value = current.get_secret_value()
            env[f"{ENV_PREFIX}{name.upper()}"] = (
                json.dumps(value) if isinstance(value, list | dict) else str(value)
            )
        return env

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka settings shared by the consumer and the producers."""
        # librdkafka's own lines go through the process's log formatter (JSON, redacted)
        conf: dict[str, Any] = {"logger": logging.getLogger("librdkafka")}
        if self.kafka_bootstrap_servers:
            conf["bootstrap.servers"] = self.kafka_bootstrap_servers
        oidc = self.kafka_sasl_oauthbearer_client_id is not None
        optional = {
            "security.protocol": self.kafka_security_protocol,
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
            "ssl.key.password": _clear(self.kafka_ssl_key_password),
            "sasl.mechanism": self.kafka_sasl_mechanism or ("OAUTHBEARER" if oidc else None),
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": _clear(self.kafka_sasl_password),
            "sasl.oauthbearer.method": "oidc" if oidc else None,
            "sasl.oauthbearer.client.id": self.kafka_sasl_oauthbearer_client_id,
            "sasl.oauthbearer.client.secret": _clear(self.kafka_sasl_oauthbearer_client_secret),
            "sasl.oauthbearer.token.endpoint.url": self.kafka_sasl_oauthbearer_token_endpoint_url,
            "sasl.oauthbearer.scope": self.kafka_sasl_oauthbearer_scope,
            "sasl.oauthbearer.extensions": self.kafka_sasl_oauthbearer_extensions,
        }
        conf.update({k: v for k, v in optional.items() if v})
        conf.update(self.kafka_config)  # the escape hatch wins
        return conf

    def registry_config(self) -> dict[str, Any]:
        """confluent-kafka ``SchemaRegistryClient`` settings (URL, TLS, basic or bearer)."""
        if not self.schema_registry_url:
            raise ValueError("PIPELINE_SCHEMA_REGISTRY_URL is not set")
        conf: dict[str, Any] = {"url": self.schema_registry_url}
        optional = {
            "basic.auth.user.info": _clear(self.schema_registry_basic_auth),
            "ssl.ca.location": self.schema_registry_ssl_ca_location,
            "ssl.certificate.location": self.schema_registry_ssl_certificate_location,
            "ssl.key.location": self.schema_registry_ssl_key_location,
            "ssl.key.password": _clear(self.schema_registry_ssl_key_password),
        }
        conf.update({k: v for k, v in optional.items() if v})
        bearer: dict[str, Any] = {}
        if self.schema_registry_bearer_token is not None:
            bearer = {
                "bearer.auth.credentials.source": "STATIC_TOKEN",
                "bearer.auth.token": self.schema_registry_bearer_token.get_secret_value(),
            }
        elif self.schema_registry_oauth_client_id is not None:
            bearer = {
                "bearer.auth.credentials.source": "OAUTHBEARER",
                "bearer.auth.client.id": self.schema_registry_oauth_client_id,
                "bearer.auth.client.secret": _clear(self.schema_registry_oauth_client_secret),
                "bearer.auth.issuer.endpoint.url": self.schema_registry_oauth_token_endpoint_url,
                "bearer.auth.scope": self.schema_registry_oauth_scope,
            }
        if bearer:
            # the client requires a logical cluster; other registries ignore the header
            bearer["bearer.auth.logical.cluster"] = self.schema_registry_bearer_logical_cluster
            if self.schema_registry_bearer_identity_pool_id:
                pool = self.schema_registry_bearer_identity_pool_id
                bearer["bearer.auth.identity.pool.id"] = pool
            conf.update(bearer)
        return conf

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # SecretStr fields mask themselves; credentials inside URLs and secret-looking
        # librdkafka properties are plain strings, masked here.
        for name, value in super().__repr_args__():
            if name in ("connect_url", "schema_registry_url") and isinstance(value, str):
                yield name, mask_url(value)
            elif name == "kafka_config" and isinstance(value, dict):
                yield name, mask_properties(value)
            else:
                yield name, value


def _clear(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    normalized = value.strip().upper()
    if normalized not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return normalized


def _security_problems(s: Settings) -> Iterator[str]:
    """Combinations librdkafka would only refuse at the first connection, or worse, ignore."""
    # (setting given, its name, what it needs, that one's name)
    needs = [
        (s.kafka_ssl_key_location, "KAFKA_SSL_KEY_LOCATION", s.kafka_ssl_certificate_location,
         "KAFKA_SSL_CERTIFICATE_LOCATION"),
        (s.kafka_sasl_oauthbearer_client_id, "KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
         s.kafka_sasl_oauthbearer_token_endpoint_url, "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"),
        (s.kafka_sasl_oauthbearer_client_id, "KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
         s.kafka_sasl_mechanism in (None, "OAUTHBEARER"), "KAFKA_SASL_MECHANISM=OAUTHBEARER"),
        (s.schema_registry_ssl_key_location, "SCHEMA_REGISTRY_SSL_KEY_LOCATION",
         s.schema_registry_ssl_certificate_location, "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION"),
        (s.schema_registry_oauth_client_id, "SCHEMA_REGISTRY_OAUTH_CLIENT_ID",
         s.schema_registry_oauth_token_endpoint_url, "SCHEMA_REGISTRY_OAUTH_TOKEN_ENDPOINT_URL"),
    ]  # fmt: skip
    for given, name, needed, needed_name in needs:
        if given and not needed:
            yield f"{ENV_PREFIX}{name} needs {ENV_PREFIX}{needed_name}"
    auths = [
        s.schema_registry_basic_auth is not None or bool(url_credentials(s.schema_registry_url)),
        s.schema_registry_bearer_token is not None,
        s.schema_registry_oauth_client_id is not None,
    ]
    if sum(auths) > 1:
        yield (
            "Schema Registry: choose one of basic auth (PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH or "
            "user:password in the URL), PIPELINE_SCHEMA_REGISTRY_BEARER_TOKEN and "
            "PIPELINE_SCHEMA_REGISTRY_OAUTH_CLIENT_ID"
        )


# --- secrets that are not SecretStr: URL credentials, librdkafka properties -------------

_SECRET_PROPERTY: Final = re.compile(
    r"password|secret|passphrase|credential|jaas|user\.info|api\.?key|\.pem$"
    r"|token(?!\.endpoint)|oauthbearer\.config"
)


def is_secret_property(name: str) -> bool:
    """A librdkafka (or registry client) property whose value is a secret."""
    return _SECRET_PROPERTY.search(name.lower()) is not None


def mask_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {k: MASK if is_secret_property(k) else v for k, v in properties.items()}


def url_credentials(url: str | None) -> list[str]:
    """The secret parts of ``scheme://user:password@host``, as written and decoded."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    if parts.username is None:
        return []
    found = [password, unquote(password)] if password else [parts.username]
    return [v for v in dict.fromkeys(found) if v]


def mask_url(url: str) -> str:
    """The URL with its password (or a lone user token) replaced by the mask."""
    try:
        parts = urlsplit(url)
        if parts.username is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        user = f"{parts.username}:{MASK}" if parts.password is not None else MASK
        return urlunsplit(parts._replace(netloc=f"{user}@{host}"))
    except ValueError:
        return url.split("://")[0] + "://" + MASK  # unparsable: show nothing after the scheme


class ConfigError(Exception):
    """Invalid configuration, with one line per problem naming the setting."""


def describe_errors(error: ValidationError) -> str:
    lines = []
    for e in error.errors(include_url=False):
        name = ".".join(str(p) for p in e["loc"])
        setting = f"{ENV_PREFIX}{name.upper()}" if name else "configuration"
        message = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"{setting}: {message}")
    return "\n".join(lines)


def secrets_directory(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The directory of file-mounted secrets, when there is one (files named like the
    variables, any case: a Kubernetes Secret with keys ``PIPELINE_CONNECT_API_KEY``...)."""
    configured = environ.get(SECRETS_DIR_ENV)
    path = Path(configured) if configured else DEFAULT_SECRETS_DIR
    if path.is_dir():
        return path
    if configured:  # asked for explicitly: a missing mount is an error, not a default
        raise ConfigError(f"{SECRETS_DIR_ENV}: {configured} is not a directory")
    return None


def known_variables() -> frozenset[str]:
    return frozenset(f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields) | (
        OTHER_VARIABLES
    )


def unknown_variables(names: Iterable[str]) -> list[str]:
    """One line per ``PIPELINE_*`` name that is no setting, with the closest known name."""
    known = known_variables()
    problems = []
    for name in sorted(names):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        problems.append(f"{name}: unknown setting{hint}")
    return problems


def _secret_file_names(directory: Path | None) -> list[str]:
    if directory is None:
        return []
    # a Kubernetes Secret volume also holds ..data and ..<timestamp> entries
    return [p.name for p in directory.iterdir() if not p.name.startswith(".")]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and files), or ConfigError naming each bad setting
    and each unknown ``PIPELINE_*`` variable or secret file."""
    unknown = unknown_variables([*os.environ, *_secret_file_names(secrets_directory())])
    if unknown:
        raise ConfigError("\n".join(unknown))
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_errors(error)) from None
    except SettingsError as error:  # a value the environment source could not parse
        raise ConfigError(str(error)) from None
