"""Loading the settings at start: unknown variables and invalid values as one ConfigError."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from pipeline.config.settings import Settings
from pipeline.config.sources import (
    ENV_PREFIX,
    OTHER_VARIABLES,
    ConfigError,
    secret_file_names,
    secrets_directory,
)


def describe_errors(error: ValidationError) -> str:
    lines = []
    for e in error.errors(include_url=False):
        name = ".".join(str(p) for p in e["loc"])
        setting = f"{ENV_PREFIX}{name.upper()}" if name else "configuration"
        message = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"{setting}: {message}")
    return "\n".join(lines)


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


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and files), or ConfigError naming each bad setting
    and each unknown ``PIPELINE_*`` variable or secret file."""
    unknown = unknown_variables([*os.environ, *secret_file_names(secrets_directory())])
    if unknown:
        raise ConfigError("\n".join(unknown))
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_errors(error)) from None
    except SettingsError as error:  # a value the environment source could not parse
        raise ConfigError(str(error)) from None
