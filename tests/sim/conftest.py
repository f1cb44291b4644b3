"""One simulator for the whole tests/sim package, reset between tests.

It runs as everywhere else (``connect_sim.testing``: a subprocess on a free port,
over real HTTP). Each test starts from a clean state: nothing recorded, no faults,
idempotency on with the default TTL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import httpx
import pytest
from connect_sim.testing import SimulatorHandle, run_simulator

API_KEY: Final = "test-sim-api-key"
APP_KEY: Final = "test-app-key"
#: The appKeys the specification's examples send (current and earlier edition).
SPEC_APP_KEYS: Final = ("{YOUR_APP_KEY}", "00000000000xxx000000000xxxx")
DEFAULT_TTL_S: Final = 3600.0
#: The document the pipeline sends (docs/TEAM_NOTES.md).
CREATE_SIGNALS: Final = (
    "mutation CreateSignals($signals: [SignalInput!]!) "
    "{ createSignals(signals: $signals) { signalIds } }"
)


class SimClient:
    """The simulator's HTTP endpoints, as a test calls them."""

    def __init__(self, handle: SimulatorHandle) -> None:
        self.handle = handle
        self.http = httpx.Client(
            base_url=handle.base_url,
            headers={"x-api-key": API_KEY},
            timeout=10,
        )

    def post(
        self,
        signals: list[Any] | None = None,
        *,
        key: str | None = None,
        signal_keys: list[str] | None = None,
        headers: dict[str, str] | None = None,
        query: str = CREATE_SIGNALS,
        variables: Any = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One createSignals call in the variables form (or ``query`` as given)."""
        sent = dict(headers or {})
        if key is not None:
            sent["Idempotency-Key"] = f'"{key}"'
        if signal_keys is not None:
            sent["Signal-Idempotency-Keys"] = ", ".join(f'"{k}"' for k in signal_keys)
        payload: dict[str, Any] = {"query": query}
        if signals is not None:
            payload["variables"] = {"signals": signals}
        if variables is not None:
            payload["variables"] = variables
        return self.http.post(
            "/graphql", json=payload, headers=sent, timeout=timeout or self.http.timeout
        )

    def stats(self) -> dict[str, Any]:
        return self.handle.stats()

    def signals(self) -> list[dict[str, Any]]:
        return self.handle.signals()

    def faults(self, **settings: Any) -> dict[str, Any]:
        return self.handle.set_faults(**settings)

    def idempotency(self, **settings: Any) -> httpx.Response:
        return self.http.post("/admin/idempotency", json=settings)


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimulatorHandle]:
    with run_simulator(API_KEY, [APP_KEY, *SPEC_APP_KEYS]) as handle:
        yield handle


@pytest.fixture
def sim(sim_server: SimulatorHandle) -> Iterator[SimClient]:
    client = SimClient(sim_server)
    client.faults()  # all off
    client.idempotency(enabled=True, ttl_s=DEFAULT_TTL_S).raise_for_status()
    sim_server.reset()
    yield client
    client.http.close()


def signal(signal_type: str = "pageView", **content: Any) -> dict[str, Any]:
    """A valid signal of the current edition (minimal required fields), overridable."""
    base: dict[str, dict[str, Any]] = {
        "addToCart": {
            "currency": "EUR",
            "itemQuantity": 2,
            "productId": "P-1",
            "productName": "Paint",
            "unitPrice": 39.99,
        },
        "browseAbandonment": {"currency": "EUR"},
        "cartAbandonment": {"currency": "EUR", "abandonedCartValue": 12.5},
        "error": {"errorText": "This promo code is invalid.", "errorType": "USER"},
        "identification": {"identifierName": "email", "identifierValue": "a@example.com"},
        "onSiteSearch": {"searchTerm": "paint", "numberOfResults": 9},
        "order": {"currency": "EUR", "orderId": "O-1"},
        "pageView": {"url": "https://www.example.com/"},
        "productConfiguration": {"currency": "EUR", "productId": "P-1", "productName": "Paint"},
        "productView": {"productId": "P-1", "productName": "Paint"},
        "richMediaInteraction": {"mediaId": "m-1"},
    }
    return {
        "appKey": APP_KEY,
        "identifiableAttributes": {"contactKey": "C-1"},
        "sessionId": "S-1",
        "signalContent": {"signalType": signal_type, **base[signal_type], **content},
    }
