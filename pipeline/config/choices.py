"""The closed sets a setting chooses from: enumerations and librdkafka's names."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")


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


def one_of(value: str, allowed: tuple[str, ...]) -> str:
    """``value`` in the upper case of ``allowed``, or ValueError naming the choices."""
    normalized = value.strip().upper()
    if normalized not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return normalized
