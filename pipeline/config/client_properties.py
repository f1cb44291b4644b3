"""The settings as client properties: librdkafka's and the Schema Registry client's."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from pipeline.config.settings import Settings


def transactional_id(s: Settings) -> str:
    """The producer's transactional.id, stable per replica: a restarted replica fences
    its own previous incarnation."""
    if s.transactional_id:
        return s.transactional_id
    replica = s.group_instance_id or socket.gethostname()
    return f"{s.group_id}-{replica}"


def kafka_common(s: Settings) -> dict[str, Any]:
    """librdkafka settings shared by the consumer and the producers."""
    # librdkafka's own lines go through the process's log formatter (JSON, redacted)
    conf: dict[str, Any] = {"logger": logging.getLogger("librdkafka")}
    if s.kafka_bootstrap_servers:
        conf["bootstrap.servers"] = s.kafka_bootstrap_servers
    oidc = s.kafka_sasl_oauthbearer_client_id is not None
    optional = {
        "security.protocol": s.kafka_security_protocol,
        "ssl.ca.location": s.kafka_ssl_ca_location,
        "ssl.certificate.location": s.kafka_ssl_certificate_location,
        "ssl.key.location": s.kafka_ssl_key_location,
        "ssl.key.password": clear(s.kafka_ssl_key_password),
        "sasl.mechanism": s.kafka_sasl_mechanism or ("OAUTHBEARER" if oidc else None),
        "sasl.username": s.kafka_sasl_username,
        "sasl.password": clear(s.kafka_sasl_password),
        "sasl.oauthbearer.method": "oidc" if oidc else None,
        "sasl.oauthbearer.client.id": s.kafka_sasl_oauthbearer_client_id,
        "sasl.oauthbearer.client.secret": clear(s.kafka_sasl_oauthbearer_client_secret),
        "sasl.oauthbearer.token.endpoint.url": s.kafka_sasl_oauthbearer_token_endpoint_url,
        "sasl.oauthbearer.scope": s.kafka_sasl_oauthbearer_scope,
        "sasl.oauthbearer.extensions": s.kafka_sasl_oauthbearer_extensions,
    }
    conf.update({k: v for k, v in optional.items() if v})
    conf.update(s.kafka_config)  # the escape hatch wins
    return conf


def registry_config(s: Settings) -> dict[str, Any]:
    """confluent-kafka ``SchemaRegistryClient`` settings (URL, TLS, basic or bearer)."""
    if not s.schema_registry_url:
        raise ValueError("PIPELINE_SCHEMA_REGISTRY_URL is not set")
    conf: dict[str, Any] = {"url": s.schema_registry_url}
    optional = {
        "basic.auth.user.info": clear(s.schema_registry_basic_auth),
        "ssl.ca.location": s.schema_registry_ssl_ca_location,
        "ssl.certificate.location": s.schema_registry_ssl_certificate_location,
        "ssl.key.location": s.schema_registry_ssl_key_location,
        "ssl.key.password": clear(s.schema_registry_ssl_key_password),
    }
    conf.update({k: v for k, v in optional.items() if v})
    bearer: dict[str, Any] = {}
    if s.schema_registry_bearer_token is not None:
        bearer = {
            "bearer.auth.credentials.source": "STATIC_TOKEN",
            "bearer.auth.token": s.schema_registry_bearer_token.get_secret_value(),
        }
    elif s.schema_registry_oauth_client_id is not None:
        bearer = {
            "bearer.auth.credentials.source": "OAUTHBEARER",
            "bearer.auth.client.id": s.schema_registry_oauth_client_id,
            "bearer.auth.client.secret": clear(s.schema_registry_oauth_client_secret),
            "bearer.auth.issuer.endpoint.url": s.schema_registry_oauth_token_endpoint_url,
            "bearer.auth.scope": s.schema_registry_oauth_scope,
        }
    if bearer:
        # the client requires a logical cluster; other registries ignore the header
        bearer["bearer.auth.logical.cluster"] = s.schema_registry_bearer_logical_cluster
        if s.schema_registry_bearer_identity_pool_id:
            pool = s.schema_registry_bearer_identity_pool_id
            bearer["bearer.auth.identity.pool.id"] = pool
        conf.update(bearer)
    return conf


def clear(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
