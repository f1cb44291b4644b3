"""What a chaos run found, and whether that is a failure; pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ChaosReport:
    seed: int
    events: int
    produced: int = 0
    valid: int = 0
    invalid: int = 0
    earlier_edition: int = 0
    accepted_rows: int = 0
    accepted_unique: int = 0
    duplicates: int = 0
    resent: int = 0  # of which in a new batch (a re-read after a kill or a lost commit)
    retried: int = 0  # of which in the same batch (a retry, or an identical re-read batch)
    lost: int = 0
    unexpected_accepted: int = 0  # keys that are no valid event's (invalid accepted?)
    dead_lettered: int = 0  # distinct invalid events found on the dead-letter topic
    dead_letter_records: int = 0  # records read (a re-read record is written again)
    dead_lettered_wrongly: int = 0  # dead-letter records that are not invalid events
    kills: int = 0
    joins: int = 0
    leaves: int = 0
    pause_s: float = 0.0
    crashes: list[str] = field(default_factory=list)
    exits: dict[str, list[int]] = field(default_factory=dict)  # per replica, in order
    bound: int = 0  # kills x the ledger's bound per crash
    retry_allowance: int = 0  # calls served after the client gave up x batch size
    simulator: dict[str, Any] = field(default_factory=dict)
    drained: bool = False
    duration_s: float = 0.0
    lost_sample: list[str] = field(default_factory=list)
    #: partitions the group had not committed to the end when the run stopped waiting
    uncommitted: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def allowed_duplicates(self) -> int:
        """The crash bound plus the served-then-lost calls."""
        return self.bound + self.retry_allowance

    def failures(self) -> list[str]:
        governing = self.allowed_duplicates
        problems = []
        if self.produced != self.events:
            problems.append(f"only {self.produced} of {self.events} events were produced")
        if self.lost:
            problems.append(f"{self.lost} valid events lost, e.g. {self.lost_sample[:5]}")
        if self.unexpected_accepted:
            problems.append(f"{self.unexpected_accepted} accepted signals are no valid event")
        if self.dead_lettered != self.invalid or self.dead_lettered_wrongly:
            problems.append(
                f"dead-lettered {self.dead_lettered} of {self.invalid} invalid events "
                f"(+{self.dead_lettered_wrongly} that are not invalid)"
            )
        if self.duplicates > governing:
            problems.append(f"{self.duplicates} duplicates exceed the bound {governing}")
        problems.extend(f"replica crashed or hung: {c}" for c in self.crashes)
        if not self.drained:
            behind = ", ".join(
                f"[{p}] committed {c} of {e}" for p, (c, e) in sorted(self.uncommitted.items())
            )
            problems.append(f"the group never committed to the end of the stream: {behind}")
        return problems

    def lines(self) -> list[str]:
        faults = self.simulator.get("faults", {})
        rows = [
            ("seed", self.seed),
            ("events produced", f"{self.produced} of {self.events}"),
            ("  valid / invalid", f"{self.valid} / {self.invalid}"),
            ("  earlier-edition", self.earlier_edition),
            ("kills (SIGKILL)", self.kills),
            ("replica joins / leaves", f"{self.joins} / {self.leaves}"),
            ("broker paused", f"{self.pause_s:g} s"),
            ("replica exit statuses", "; ".join(f"{k} {v}" for k, v in self.exits.items())),
            ("simulator faults", ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))),
            ("accepted (all calls)", self.accepted_rows),
            ("accepted unique", self.accepted_unique),
            ("duplicates", f"{self.duplicates} ({self.retried} same batch, {self.resent} new)"),
            ("lost", self.lost),
            ("accepted, not valid", self.unexpected_accepted),
            ("dead-lettered", f"{self.dead_lettered} ({self.dead_letter_records} records)"),
            ("dead-lettered wrongly", self.dead_lettered_wrongly),
            ("duplicate bound (kills)", self.bound),
            ("  + served, answer lost", self.retry_allowance),
            ("  = duplicates allowed", self.allowed_duplicates),
            ("duration", f"{self.duration_s:.1f} s"),
        ]
        return [f"{name:<27}{value}" for name, value in rows]


@dataclass(frozen=True, slots=True)
class Tally:
    rows: int  # accepted signals, every acceptance counted
    unique: int  # distinct valid events accepted
    resent: int  # duplicates in a new batch (a re-read: a kill, a lost commit)
    retried: int  # in the same batch key: a retried call Connect had served, or a
    # re-read that formed the identical batch again (the key hashes its signals)
    unexpected: int  # accepted keys that are no valid event
    lost: list[str]  # valid events never accepted

    @property
    def duplicates(self) -> int:
        return self.resent + self.retried


def tally_accepted(rows: Sequence[tuple[str, str | None]], valid_ids: set[str]) -> Tally:
    """Classify accepted (signal key, batch key) rows against the valid event ids."""
    seen: set[str] = set()
    calls: set[tuple[str, str | None]] = set()
    resent = retried = unexpected = 0
    for key, batch_key in rows:
        if key not in valid_ids:
            unexpected += 1
        elif key in seen:
            if (key, batch_key) in calls:
                retried += 1
            else:
                resent += 1
        seen.add(key)
        calls.add((key, batch_key))
    lost = sorted(valid_ids - seen)
    return Tally(len(rows), len(seen & valid_ids), resent, retried, unexpected, lost)
