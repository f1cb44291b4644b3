"""The pipeline and the simulator check each other: what one maps, the other accepts.

Both are written from the specification independently (pipeline.signals.catalog and
connect_sim.rules). Every signal the pipeline validates and maps, for every type with
only its required fields and with every field set, and a whole synthetic clickstream,
must be accepted by the simulator; a disagreement is a bug in one of them.
"""

from __future__ import annotations

from typing import Any

import pytest
from devtools.clickstream import clickstream

from pipeline.connect.document import request_body
from pipeline.signals import catalog
from pipeline.signals.mapping import MappedSignal, MappingOptions, map_event
from pipeline.signals.validation import ValidEvent, validate_event
from tests.sim.conftest import APP_KEY, SimClient
from tests.sim.test_rules import CASES as RULE_CASES
from tests.spec_examples import full_event, minimal_event

OPTIONS = MappingOptions(default_app_key=APP_KEY)


def mapped(signal_type: str, event: dict[str, Any]) -> MappedSignal:
    event = {k: v for k, v in event.items() if k not in ("signalType", "appKey")}
    valid = validate_event(signal_type, event)
    assert isinstance(valid, ValidEvent), valid
    result = map_event(valid, OPTIONS)
    assert isinstance(result, MappedSignal), result
    return result


def assert_all_accepted(sim: SimClient, signals: list[MappedSignal]) -> None:
    body = request_body([s.signal for s in signals])
    keys = ", ".join(f'"{s.idempotency_key}"' for s in signals)
    response = sim.http.post(
        "/graphql",
        content=body,
        headers={"content-type": "application/json", "Signal-Idempotency-Keys": keys},
    )
    assert response.status_code == 200, response.text
    document = response.json()
    assert document.get("errors") is None, document["errors"][:5]
    assert None not in document["data"]["createSignals"]["signalIds"]
    assert [r["signal"] for r in sim.signals()] == [s.signal for s in signals]


@pytest.mark.parametrize("build", [minimal_event, full_event], ids=["required", "every field"])
def test_every_type_the_pipeline_maps_is_accepted(sim: SimClient, build: Any) -> None:
    signals = [mapped(t, build(t)) for t in sorted(catalog.SIGNALS)]
    assert len(signals) == 11
    assert_all_accepted(sim, signals)


def test_a_clickstream_the_pipeline_maps_is_accepted(sim: SimClient) -> None:
    signals = []
    for event in clickstream(600, seed=21, invalid_ratio=0.1, v1_ratio=0.2):
        valid = validate_event(event.signal_type, event.record)
        if isinstance(valid, ValidEvent):
            result = map_event(valid, OPTIONS)
            if isinstance(result, MappedSignal):
                signals.append(result)
    assert len(signals) > 400
    assert_all_accepted(sim, signals)


def as_event(signal: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A simulator test signal as the clickstream event a producer would write."""
    content = dict(signal["signalContent"])
    signal_type = content.pop("signalType")
    event = {
        "sessionId": signal["sessionId"],
        "identifiableAttributes": signal["identifiableAttributes"],
        "eventTime": content.pop("signalTimestamp", "2025-08-31T08:29:30.001Z"),
        **content,
    }
    return signal_type, event


CONTENT_CASES = [
    c for c in RULE_CASES if c.field.startswith("signalContent.") and "signalType" not in c.field
]


@pytest.mark.parametrize("case", CONTENT_CASES, ids=lambda c: c.rule)
def test_what_the_simulator_rejects_the_pipeline_never_sends_as_is(
    sim: SimClient, case: Any
) -> None:
    """The pipeline rejects the event, or maps it into a signal Connect accepts."""
    signal_type, event = as_event(case.make())
    valid = validate_event(signal_type, event)
    if not isinstance(valid, ValidEvent):
        return  # rejected (dead-lettered) before any call: agreed
    result = map_event(valid, OPTIONS)
    if isinstance(result, MappedSignal):
        assert_all_accepted(sim, [result])
