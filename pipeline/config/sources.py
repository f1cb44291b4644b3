"""Where settings come from: the environment, secret files and the TOML file, in that order."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from pydantic import SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    TomlConfigSettingsSource,
)

ENV_PREFIX: Final = "PIPELINE_"
CONFIG_FILE_ENV: Final = "PIPELINE_CONFIG_FILE"
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


class ConfigError(Exception):
    """Invalid configuration, with one line per problem naming the setting."""


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


def secret_file_names(directory: Path | None) -> list[str]:
    if directory is None:
        return []
    # a Kubernetes Secret volume also holds ..data and ..<timestamp> entries
    return [p.name for p in directory.iterdir() if not p.name.startswith(".")]


def ordered_sources(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
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


def environment_of(settings: BaseSettings) -> dict[str, str]:
    """The ``PIPELINE_*`` variables that give these settings back (secrets in clear)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        current = getattr(settings, name)
        if isinstance(current, SecretStr):
            value = current.get_secret_value()
        env[f"{ENV_PREFIX}{name.upper()}"] = (
            json.dumps(value) if isinstance(value, list | dict) else str(value)
        )
    return env
