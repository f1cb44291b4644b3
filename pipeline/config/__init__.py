"""Configuration: environment variables (prefix ``PIPELINE_``) and an optional TOML file.

Validated at start; an invalid setting stops the process with a message that names
the environment variable and the rule, and so does an unknown ``PIPELINE_*`` variable
(a typo would otherwise be ignored silently). Secrets are ``SecretStr``: they print as
``**********`` wherever a setting is shown; so do credentials inside the URLs and
secret-looking ``PIPELINE_KAFKA_CONFIG`` values. Secrets can also be files, one per
setting, named like the variable, in ``PIPELINE_SECRETS_DIR`` (default
``/run/secrets/pipeline``: a mounted Kubernetes Secret).

The model is in settings.py, its fields in sections.py; its parts: choices
(enumerations), sources (environment, secret files, TOML), rules (across settings),
masking, client_properties (librdkafka and Schema Registry), loading (unknown
variables, one ConfigError). Everything public is importable from here, as it was
from the single module.
"""

from pipeline.config.choices import (
    LOG_LEVELS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    AvroDecoder,
    DeriveAbandonment,
    LogFormat,
    OutOfTier,
)
from pipeline.config.loading import (
    describe_errors,
    known_variables,
    load_settings,
    unknown_variables,
)
from pipeline.config.masking import (
    MASK,
    is_secret_property,
    mask_properties,
    mask_url,
    url_credentials,
)
from pipeline.config.settings import DEFAULT_AVRO_DIR, MAX_SIGNALS_PER_CALL, Settings
from pipeline.config.sources import (
    CONFIG_FILE_ENV,
    DEFAULT_SECRETS_DIR,
    ENV_PREFIX,
    OTHER_VARIABLES,
    SECRETS_DIR_ENV,
    ConfigError,
    secrets_directory,
)

__all__ = [
    "CONFIG_FILE_ENV",
    "DEFAULT_AVRO_DIR",
    "DEFAULT_SECRETS_DIR",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "MASK",
    "MAX_SIGNALS_PER_CALL",
    "OTHER_VARIABLES",
    "SASL_MECHANISMS",
    "SECRETS_DIR_ENV",
    "SECURITY_PROTOCOLS",
    "AvroDecoder",
    "ConfigError",
    "DeriveAbandonment",
    "LogFormat",
    "OutOfTier",
    "Settings",
    "describe_errors",
    "is_secret_property",
    "known_variables",
    "load_settings",
    "mask_properties",
    "mask_url",
    "secrets_directory",
    "unknown_variables",
    "url_credentials",
]
