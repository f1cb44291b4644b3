"""Adaptive concurrency (AIMD): a scripted sequence of answers and latencies."""

from __future__ import annotations

import httpx
import pytest

from pipeline.connect.client import Classified, Verdict, classify_response, is_backpressure
from pipeline.connect.concurrency import AdaptiveConcurrency
from pipeline.kafka.deliveries import Deliveries


def window(
    control: AdaptiveConcurrency, latency_s: float, *, pressed: bool = False, full: bool = True
) -> int:
    """One window of answers (as many as the limit); the limit after it."""
    if full:
        control.reached()
    answers = control.limit
    for n in range(answers):
        control.observe(pressed and n == answers - 1, latency_s)
    return control.limit


def test_starts_at_the_maximum_and_halves_on_back_pressure_down_to_one() -> None:
    control = AdaptiveConcurrency(8)
    assert control.limit == 8
    assert [window(control, 0.05, pressed=True) for _ in range(5)] == [4, 2, 1, 1, 1]


def test_grows_by_one_a_window_of_good_answers_up_to_the_maximum() -> None:
    control = AdaptiveConcurrency(4, initial=1)
    assert [window(control, 0.05) for _ in range(5)] == [2, 3, 4, 4, 4]


def test_does_not_grow_when_the_limit_held_nothing_back() -> None:
    control = AdaptiveConcurrency(4, initial=2)
    assert [window(control, 0.05, full=False) for _ in range(3)] == [2, 2, 2]


def test_the_limit_changes_only_at_the_end_of_a_window() -> None:
    control = AdaptiveConcurrency(8)
    assert [control.observe(n == 0, 0.05) for n in range(8)] == [8] * 7 + [4]


def test_a_latency_rise_halves_noise_does_not() -> None:
    control = AdaptiveConcurrency(8, initial=4)
    for _ in range(6):  # steady latency with some jitter: keeps growing to the maximum
        window(control, 0.100)
        window(control, 0.120)
    assert control.limit == 8
    assert window(control, 0.130) == 8  # within the noise
    assert window(control, 0.400) == 4  # a clear rise
    # the average follows the new latency: steady again, growth resumes
    limits = [window(control, 0.400) for _ in range(8)]
    assert limits[-1] == 8 and min(limits) >= 4


def test_drops_on_a_429_burst_and_recovers() -> None:
    control = AdaptiveConcurrency(4)
    limits = []
    for n in range(12):
        limits.append(window(control, 0.05, pressed=3 <= n < 5))
    assert limits[:3] == [4, 4, 4]
    assert limits[3:5] == [2, 1]
    assert limits[-1] == 4 and limits.index(4, 5) > 5


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, b"", True),
        (503, b"", True),
        (500, b"", False),
        (200, b'{"data":null,"errors":[{"message":"x","extensions":{"code":"THROTTLED"}}]}', True),
        (
            200,
            b'{"data":null,"errors":[{"message":"x","extensions":{"code":"RATE_LIMITED"}}]}',
            True,
        ),
        (200, b'{"data":null,"errors":[{"message":"x","extensions":{"code":"FORBIDDEN"}}]}', False),
        (200, b'{"data":{"createSignals":{"signalIds":["a"]}}}', False),
        (504, b"", True),
    ],
)
def test_back_pressure_answers(status: int, body: bytes, expected: bool) -> None:
    outcome = classify_response(status, httpx.Headers(), body, 1)
    assert is_backpressure(status, outcome) is expected


def test_a_timeout_is_back_pressure() -> None:
    assert is_backpressure(None, Classified(Verdict.RETRY, message="timeout", slow=True))


def test_deliveries_hold_calls_to_the_adaptive_limit() -> None:
    control = AdaptiveConcurrency(4, initial=2)
    deliveries = Deliveries(lambda batch: None, 4, control)  # type: ignore[arg-type,return-value]
    try:
        assert deliveries.limit == 2
        deliveries.in_flight = 1
        assert deliveries.has_room
        deliveries.in_flight = 2
        assert not deliveries.has_room
        control.limit = 3
        assert deliveries.has_room
    finally:
        deliveries.close()
