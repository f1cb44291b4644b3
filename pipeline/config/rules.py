"""Rules across settings: combinations a single field's validator cannot see."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pipeline.config.choices import DeriveAbandonment
from pipeline.config.masking import url_credentials
from pipeline.config.sources import ENV_PREFIX
from pipeline.signals.catalog import Tier

if TYPE_CHECKING:
    from pipeline.config.settings import Settings


def problems(s: Settings) -> Iterator[str]:
    """Every inconsistency, one message each, in the order they are reported."""
    if bool(s.topics) == bool(s.topic_pattern):
        yield "set exactly one of PIPELINE_TOPICS or PIPELINE_TOPIC_PATTERN"
    if s.dlq_topic in s.topics:
        yield "PIPELINE_DLQ_TOPIC must not be one of PIPELINE_TOPICS"
    if s.derive_abandonment is not DeriveAbandonment.OFF and s.subscription_tier is Tier.PRO:
        yield (
            "PIPELINE_DERIVE_ABANDONMENT needs PIPELINE_SUBSCRIPTION_TIER Premium or "
            "Ultimate (Pro does not include abandonment signals)"
        )
    yield from security_problems(s)


def security_problems(s: Settings) -> Iterator[str]:
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
