"""What the HTTP client verifies TLS with: the system's CA bundle, only when TLS is used.

httpx builds its verifying context (the CA bundle read and parsed: 0.05-0.35 s) when a
client is made, even for an ``http://`` URL that never opens TLS. For such a URL, with
no proxy from the environment (the one way TLS could still be spoken), the client gets
a context that trusts no certificate instead: it costs nothing and, should TLS ever be
attempted, fails closed, never unverified.
"""

from __future__ import annotations

import ssl
import urllib.request
from urllib.parse import urlsplit


def tls_verify(url: str, *, trust_env: bool = True) -> ssl.SSLContext | bool:
    """httpx's ``verify`` for a client that posts to ``url``."""
    if urlsplit(url).scheme.lower() != "http":
        return True  # https: httpx's default context (certifi's CA bundle)
    if trust_env and urllib.request.getproxies():
        return True  # a proxy may be reached over TLS: verify it as usual
    return _no_trust()


def _no_trust() -> ssl.SSLContext:
    # PROTOCOL_TLS_CLIENT requires a certificate and checks host names; no CA is loaded,
    # so no certificate can pass
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
