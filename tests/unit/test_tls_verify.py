"""A plain-http Connect URL builds no CA bundle; https and proxies verify as before."""

from __future__ import annotations

import ssl

import pytest

from pipeline.kafka.runner import tls_verify

PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
)


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_https_keeps_the_default_verification(no_proxies: None) -> None:
    assert tls_verify("https://connect.example.com/graphql") is True
    assert tls_verify("HTTPS://connect.example.com/graphql") is True


def test_plain_http_gets_a_context_that_trusts_nothing(no_proxies: None) -> None:
    context = tls_verify("http://127.0.0.1:8080/graphql")
    assert isinstance(context, ssl.SSLContext)
    # fails closed: certificates required, host names checked, no CA to accept any
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.get_ca_certs() == []
    assert context.cert_store_stats()["x509"] == 0


def test_a_proxy_from_the_environment_keeps_the_default(
    no_proxies: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.example.com:3128")
    assert tls_verify("http://connect.internal/graphql") is True
    assert isinstance(
        tls_verify("http://connect.internal/graphql", trust_env=False), ssl.SSLContext
    )
