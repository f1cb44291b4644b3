"""Configuration: environment variables (prefix ``PIPELINE_``) and an optional TOML file.

Validated at start; an invalid setting stops the process with a message that names
the environment variable and the rule. Secrets are ``SecretStr``: they print as
``**********`` wherever a setting is shown.
"""

from __future__ import annotations

import json
import logging
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from pipeline.signals.catalog import Tier

ENV_PREFIX: Final = "PIPELINE_"
CONFIG_FILE_ENV: Final = "PIPELINE_CONFIG_FILE"
#: A source checkout's avro/. An installed wheel has none there (site-packages/avro is the
#: Apache Avro library): the same schemas are then generated in memory from the catalog
#: (pipeline.codec.schemas.schema_texts).
DEFAULT_AVRO_DIR: Final = Path(__file__).resolve().parent.parent / "avro"


class OutOfTier(StrEnum):
    """What happens to signal types outside the subscription tier."""

    DEAD_LETTER = "dead_letter"
    DROP = "drop"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


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
    kafka_security_protocol: str | None = Field(None, description="security.protocol.")
    kafka_sasl_mechanism: str | None = Field(None, description="sasl.mechanism.")
    kafka_sasl_username: str | None = Field(None, description="sasl.username.")
    kafka_sasl_password: SecretStr | None = Field(None, description="sasl.password (secret).")
    kafka_ssl_ca_location: str | None = Field(None, description="ssl.ca.location.")
    kafka_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka settings for consumer and producer (JSON object).",
    )
    session_timeout_ms: int = Field(10_000, ge=1_000, description="session.timeout.ms.")
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
    avro_dir: Path = Field(
        DEFAULT_AVRO_DIR,
        description="Directory of the generated .avsc (default: avro/ of a source checkout, "
        "else the same schemas built from the catalog in memory).",
    )
    max_event_bytes: int = Field(
        1024 * 1024, ge=1_024, description="Larger record values are dead-lettered undecoded."
    )

    # --- Connect API ---------------------------------------------------------------------
    connect_url: str = Field(
        "http://127.0.0.1:8080/graphql", description="Connect GraphQL endpoint."
    )
    connect_api_key: SecretStr | None = Field(None, description="Connect API key (secret).")
    connect_auth_header: str = Field("Authorization", description="Header carrying the key.")
    connect_auth_scheme: str = Field(
        "Bearer", description="Scheme before the key ('' sends the bare key)."
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
    batch_max_signals: int = Field(250, ge=1, le=10_000, description="Signals per call.")
    batch_max_bytes: int = Field(
        512 * 1024, ge=1_024, description="Request body bytes per call (at most)."
    )
    linger_ms: int = Field(50, ge=0, description="Wait this long to fill a batch.")
    max_in_flight_batches: int = Field(8, ge=1, le=256, description="Concurrent calls.")
    request_timeout_s: float = Field(10.0, gt=0, description="Timeout of one call.")
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

    # --- operations --------------------------------------------------------------------------
    log_format: LogFormat = Field(LogFormat.JSON, description="json or console.")
    log_level: str = Field("INFO", description="Log level.")
    http_port: int = Field(
        9400, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz (0: off)."
    )
    http_host: str = Field(
        "127.0.0.1", description="Address of that endpoint (the container image sets 0.0.0.0)."
    )
    liveness_timeout_s: float = Field(
        60.0, gt=0, description="/healthz fails when the poll loop has not turned for this long."
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

    @field_validator("connect_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if bool(self.topics) == bool(self.topic_pattern):
            raise ValueError("set exactly one of PIPELINE_TOPICS or PIPELINE_TOPIC_PATTERN")
        if self.dlq_topic in self.topics:
            raise ValueError("PIPELINE_DLQ_TOPIC must not be one of PIPELINE_TOPICS")
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
        # Precedence: explicit arguments, environment, then the optional TOML file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
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
        optional = {
            "security.protocol": self.kafka_security_protocol,
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "ssl.ca.location": self.kafka_ssl_ca_location,
        }
        conf.update({k: v for k, v in optional.items() if v})
        if self.kafka_sasl_password is not None:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        conf.update(self.kafka_config)
        return conf


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


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and file), or ConfigError naming each bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_errors(error)) from None
    except SettingsError as error:  # a value the environment source could not parse
        raise ConfigError(str(error)) from None
