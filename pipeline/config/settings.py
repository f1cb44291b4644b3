"""The settings model: the sections' fields, validated alone and together, and what the
rest of the program asks of them (topics to subscribe, client properties, a child's
environment)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.config import client_properties, rules
from pipeline.config.choices import LOG_LEVELS, SASL_MECHANISMS, SECURITY_PROTOCOLS, one_of
from pipeline.config.masking import masked_fields
from pipeline.config.sections import (
    DEFAULT_AVRO_DIR,
    MAX_SIGNALS_PER_CALL,
    ConnectSection,
    DecodingSection,
    DeliverySection,
    KafkaSection,
    LedgerSection,
    OperationsSection,
    SessionSection,
)
from pipeline.config.sources import ENV_PREFIX, environment_of, ordered_sources

__all__ = ["DEFAULT_AVRO_DIR", "MAX_SIGNALS_PER_CALL", "Settings"]


# pydantic orders fields from the last base to the first: the sections are listed
# bottom-up so that Kafka's come first (in the configuration reference too).
class Settings(
    OperationsSection,
    SessionSection,
    LedgerSection,
    DeliverySection,
    ConnectSection,
    DecodingSection,
    KafkaSection,
    BaseSettings,
):
    """Every setting of the consumer. Environment: ``PIPELINE_<NAME>`` (upper case)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
        defer_build=False,  # the sections defer theirs; this one is built at import
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
        return one_of(value, LOG_LEVELS)

    @field_validator("kafka_security_protocol")
    @classmethod
    def _security_protocol(cls, value: str | None) -> str | None:
        return None if value is None else one_of(value, SECURITY_PROTOCOLS)

    @field_validator("kafka_sasl_mechanism")
    @classmethod
    def _sasl_mechanism(cls, value: str | None) -> str | None:
        return None if value is None else one_of(value, SASL_MECHANISMS)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for problem in rules.problems(self):
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
        return ordered_sources(settings_cls, init_settings, env_settings)

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
        return environment_of(self)

    def replica_transactional_id(self) -> str:
        """PIPELINE_TRANSACTIONAL_ID, or '<group_id>-<group_instance_id|hostname>'."""
        return client_properties.transactional_id(self)

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka settings shared by the consumer and the producers."""
        return client_properties.kafka_common(self)

    def registry_config(self) -> dict[str, Any]:
        """confluent-kafka ``SchemaRegistryClient`` settings (URL, TLS, basic or bearer)."""
        return client_properties.registry_config(self)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # SecretStr fields mask themselves; credentials inside URLs and secret-looking
        # librdkafka properties are plain strings, masked here.
        return masked_fields(super().__repr_args__())
