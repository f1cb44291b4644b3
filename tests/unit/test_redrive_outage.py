"""A redrive's key pass waits through a Schema Registry outage instead of aborting."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.codec.avro import SchemaRegistryUnavailable
from pipeline.codec.registry_answers import SchemaLookupRunning
from pipeline.kafka import redrive
from pipeline.signals.outcomes import Reason, Rejection


class _FlakyProcessor:
    """Unavailable for the first ``outages`` calls, then an answer."""

    def __init__(self, outages: int, unavailable: type[SchemaRegistryUnavailable]) -> None:
        self.outages = outages
        self.unavailable = unavailable
        self.calls = 0

    def process(self, value: bytes | None, headers: object = None) -> Any:
        self.calls += 1
        if self.calls <= self.outages:
            raise self.unavailable(7, "HTTP 502 from an ingress page")
        return Rejection.single(Reason.VALIDATION, "url", "required")


@pytest.mark.parametrize(
    ("unavailable", "waits_s"),
    [
        (SchemaRegistryUnavailable, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]),  # doubling, capped
        (SchemaLookupRunning, [redrive.LOOKUP_POLL_S] * 6),  # still asking: no backoff
    ],
    ids=["outage", "look-up running"],
)
def test_the_key_pass_waits_and_gets_the_answer(
    unavailable: type[SchemaRegistryUnavailable],
    waits_s: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(redrive.time, "sleep", waits.append)
    processor = _FlakyProcessor(6, unavailable)
    outcome = redrive._process_through_outages(processor, b"x", max_backoff_s=8.0)  # type: ignore[arg-type]
    assert isinstance(outcome, Rejection) and outcome.field == "url"
    assert processor.calls == 7
    assert waits == waits_s


def test_any_other_error_is_not_swallowed() -> None:
    class Broken:
        def process(self, value: bytes | None, headers: object = None) -> Any:
            raise ValueError("a bug")

    with pytest.raises(ValueError):
        redrive._process_through_outages(Broken(), b"x")  # type: ignore[arg-type]
