"""Secrets that are not ``SecretStr``: credentials in URLs, secret librdkafka properties.

Pure functions: the settings' repr and the log redactor mask with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

MASK: Final = "**********"

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


#: the settings whose plain-string values may hold a credential
_URL_FIELDS: Final = ("connect_url", "schema_registry_url")


def masked_fields(
    fields: Iterable[tuple[str | None, Any]],
) -> Iterator[tuple[str | None, Any]]:
    """The settings' (name, value) pairs with URL credentials and secret properties masked."""
    for name, value in fields:
        if name in _URL_FIELDS and isinstance(value, str):
            yield name, mask_url(value)
        elif name == "kafka_config" and isinstance(value, dict):
            yield name, mask_properties(value)
        else:
            yield name, value
