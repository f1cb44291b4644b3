"""The chaos run's script: what happens when, and the simulator's faults; pure, from the seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

ActionKind = Literal["kill", "join", "leave", "pause", "burst"]


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    events: int = 100_000
    seed: int = 1
    kills: int = 3
    pause_s: float = 10.0  # 0: no broker pause
    rebalance: bool = True  # a second replica joins and later leaves
    partitions: int = 6
    invalid_ratio: float = 0.03
    v1_ratio: float = 0.05
    before_ratio: float = 0.2  # produced before the consumers start; the rest during
    produce_rate: float = 1_000.0  # events/s for the part produced during the run
    #: Membership changes (kill, join, leave) wait this long after the previous one: the
    #: embedded broker never expires a group leader killed mid-rebalance (README).
    settle_s: float = 12.0
    faults: bool = True
    timeout_s: float = 900.0  # give up waiting for the stream to drain
    settings: dict[str, Any] = field(default_factory=dict)  # consumer overrides


@dataclass(frozen=True, slots=True)
class Action:
    """Something done to the system once ``at`` of the valid events are accepted."""

    at: float
    kind: ActionKind
    pick: int = 0  # which live replica a kill hits (index modulo the live ones)
    delay_s: float = 0.0  # kill: extra wait after the threshold; restart: wait before


def plan_actions(config: ChaosConfig) -> list[Action]:
    """The run's script, in firing order; the same seed gives the same script."""
    rng = random.Random(f"chaos-plan-{config.seed}")
    actions = [
        Action(rng.uniform(0.05, 0.9), "kill", rng.randrange(1 << 16), rng.uniform(0, 0.5))
        for _ in range(config.kills)
    ]
    if config.rebalance:
        join = rng.uniform(0.1, 0.35)
        actions.append(Action(join, "join"))
        actions.append(Action(rng.uniform(join + 0.2, 0.85), "leave"))
    if config.pause_s > 0:
        actions.append(Action(rng.uniform(0.3, 0.7), "pause"))
    if config.faults:
        actions.extend(Action(rng.uniform(0.1, 0.9), "burst") for _ in range(2))
    return sorted(actions, key=lambda a: a.at)


def simulator_faults(seed: int, *, burst: int = 0) -> dict[str, Any]:
    """The simulator's fault settings: 5xx, 429 (bursts), latency, timeouts, drops, and
    answers a client cannot take at face value: coded GraphQL errors in a 200 (a
    transient code), malformed bodies (every shape), a proxy's 407 page, 504s.

    Timeouts and drops after processing make Connect accept a batch whose answer the
    client never sees: the retry sends it again (counted apart, see ``retried``). The
    answer faults record nothing: they must cost retries only, never a dead letter.
    """
    return {  # the simulator refuses a name it does not know (connect_sim.faults.Faults)
        "seed": seed,
        "error_rate": 0.05,
        "rate_limit_rate": 0.01,
        "rate_limit_burst": burst,
        "retry_after_s": 0.5,
        "latency_ms": 5,
        "latency_jitter_ms": 20,
        "drop_connection_rate": 0.02,
        "drop_after_processing_rate": 0.002,
        "timeout_rate": 0.002,
        "timeout_s": 3.0,
        "graphql_error_rate": 0.01,
        "graphql_error_code": "any",
        "malformed_rate": 0.01,
        "malformed_shape": "any",
        "proxy_407_rate": 0.003,
        "gateway_timeout_rate": 0.005,
    }
