"""One chaos run: start everything, play the script, wait for the drain, build the report."""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

from devtools.chaos.bounds import crash_bound, retry_allowance
from devtools.chaos.observe import accepted_rows, group_offsets, read_dead_letters
from devtools.chaos.plan import Action, ChaosConfig, plan_actions, simulator_faults
from devtools.chaos.processes import EventFeed, Replica
from devtools.chaos.report import ChaosReport, tally_accepted
from devtools.clickstream import clickstream
from devtools.stack import kafka, new_topics, simulator
from pipeline.config import Settings

APP_KEY: Final = "chaos-app-key"
API_KEY: Final = "chaos-api-key"
#: Every valid event accepted, yet no committed offset moved for this long: stop waiting.
COMMIT_STALL_S: Final = 60.0


def consumer_settings(
    bootstrap: str, topic: str, dlq: str, url: str, overrides: dict[str, Any]
) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "topics": [topic],
        "dlq_topic": dlq,
        "group_id": f"chaos-{topic}",
        "connect_url": url,
        "connect_api_key": API_KEY,
        "default_app_key": APP_KEY,
        "session_timeout_ms": 6000,  # group joins in ~3 s on the embedded broker
        "request_timeout_s": 2.0,  # the simulator's injected hangs last 3 s
        "retry_initial_backoff_ms": 20,
        "retry_max_backoff_ms": 1000,
        "drain_timeout_s": 10,
        "http_port": 0,
    }
    values.update(overrides)
    return Settings(**values)


class ChaosRun:
    """Runs one plan against live processes and builds the report."""

    def __init__(
        self,
        config: ChaosConfig,
        *,
        bootstrap: str | None = None,  # None: devtools.stack.kafka decides
        log_dir: Path | None = None,
        echo: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
        self.echo = echo
        self.report = ChaosReport(config.seed, config.events)
        self.stop_timeout_s = 30.0
        self.bootstrap_servers, self.group_id, self.topic = "", "", ""
        self._last_change = 0.0

    def run(self) -> ChaosReport:
        started = time.monotonic()
        config, report = self.config, self.report
        events = list(
            clickstream(
                config.events,
                seed=config.seed,
                invalid_ratio=config.invalid_ratio,
                v1_ratio=config.v1_ratio,
            )
        )
        valid_ids = {e.event_id for e in events if not e.invalid}
        report.valid, report.invalid = len(valid_ids), len(events) - len(valid_ids)
        report.earlier_edition = sum(1 for e in events if e.edition == 1)
        sim_args = ["--no-idempotency"]  # let every duplicate the pipeline sends show
        with ExitStack() as stack:
            running = stack.enter_context(kafka(self.bootstrap, log_dir=self.log_dir))
            bootstrap, embedded = running.bootstrap_servers, running.broker
            sim = stack.enter_context(simulator(API_KEY, [APP_KEY], sim_args))
            if config.faults:
                sim.set_faults(**simulator_faults(config.seed))
            topic, dlq = new_topics(bootstrap, f"chaos-{config.seed}", config.partitions)
            settings = consumer_settings(bootstrap, topic, dlq, sim.graphql_url, config.settings)
            self.bootstrap_servers, self.group_id, self.topic = bootstrap, settings.group_id, topic
            self.stop_timeout_s = settings.drain_timeout_s + 20
            replicas = [Replica("A", settings, self.log_dir), Replica("B", settings, self.log_dir)]
            for replica in replicas:
                stack.callback(replica.kill)
            feed = EventFeed(bootstrap, topic, events)
            first = int(len(events) * config.before_ratio)
            feed.produce_first(first)
            self.echo(f"produced {first} events before the consumers; logs in {self.log_dir}")
            replicas[0].start()
            feed.start_rest(first, config.produce_rate)

            def progress() -> float:
                return int(sim.stats()["unique_keys"]) / max(1, len(valid_ids))

            self._play(plan_actions(config), replicas, embedded, sim, progress, started)
            report.drained = self._wait_drained(replicas, feed, progress, started)
            for replica in replicas:
                if replica.alive:
                    self._stop(replica, "at the end")
                replica.record_exit()
                report.exits[replica.name] = replica.exits
            feed.join(30)
            report.produced = feed.acknowledged
            rows = accepted_rows(sim.base_url)
            report.simulator = sim.stats()
            tally = tally_accepted(rows, valid_ids)
            report.accepted_rows, report.accepted_unique = tally.rows, tally.unique
            report.duplicates, report.unexpected_accepted = tally.duplicates, tally.unexpected
            report.resent, report.retried = tally.resent, tally.retried
            report.lost, report.lost_sample = len(tally.lost), tally.lost[:20]
            dead = read_dead_letters(bootstrap, dlq, feed.invalid_values, timeout_s=60)
            report.dead_letter_records = len(dead)
            report.dead_lettered = len(set(dead) & feed.invalid_values)
            report.dead_lettered_wrongly = len(set(dead) - feed.invalid_values)
            report.bound = crash_bound(report.kills, settings)
            report.retry_allowance = retry_allowance(report.simulator, settings)
        report.duration_s = time.monotonic() - started
        return report

    def _play(
        self,
        actions: Sequence[Action],
        replicas: list[Replica],
        embedded: Any,
        sim: Any,
        progress: Callable[[], float],
        started: float,
    ) -> None:
        rng = random.Random(f"chaos-restart-{self.config.seed}")
        deadline = started + self.config.timeout_s
        self._last_change = time.monotonic()  # replica A has just started
        for action in actions:
            settled = action.kind not in ("kill", "join", "leave")
            while progress() < action.at or not settled:
                self._check_crashes(replicas)
                if time.monotonic() > deadline:
                    return
                settled = settled or time.monotonic() - self._last_change >= self.config.settle_s
                time.sleep(0.1)
            time.sleep(action.delay_s)
            moment = f"{time.monotonic() - started:6.1f} s, {progress():4.0%} accepted"
            self._do(action, moment, replicas, embedded, sim, rng)
            if action.kind != "burst":
                self._last_change = time.monotonic()

    def _do(
        self,
        action: Action,
        moment: str,
        replicas: list[Replica],
        embedded: Any,
        sim: Any,
        rng: random.Random,
    ) -> None:
        report, a, b = self.report, replicas[0], replicas[1]
        if action.kind == "kill":
            live = [r for r in replicas if r.alive] or [a]
            victim = live[action.pick % len(live)]
            victim.kill()
            report.kills += 1
            time.sleep(rng.uniform(0, 1.0))
            victim.start()
            self.echo(f"{moment}: SIGKILL replica {victim.name}, restarted")
        elif action.kind == "join":
            b.start()
            report.joins += 1
            self.echo(f"{moment}: replica B joins")
        elif action.kind == "leave":
            if b.alive:
                self._stop(b, "when leaving")
                report.leaves += 1
                self.echo(f"{moment}: replica B leaves")
        elif action.kind == "pause":
            if embedded is None:
                self.echo(f"{moment}: broker pause skipped (not our broker)")
                return
            embedded.pause()
            time.sleep(self.config.pause_s)
            embedded.resume()
            report.pause_s += self.config.pause_s
            self.echo(f"{moment}: broker paused for {self.config.pause_s:g} s")
        elif action.kind == "burst":
            burst = rng.randrange(10, 40)
            sim.set_faults(**simulator_faults(rng.randrange(1 << 30), burst=burst))
            self.echo(f"{moment}: simulator answers the next {burst} calls with 429")

    def _committed_to_end(self, end_offsets: dict[int, int]) -> bool:
        """The group committed every partition to its end: every record is finished.

        Ends come from the producer's acknowledgements, not from watermarks (the
        embedded broker's undercount). Until then a replica may still owe dead letters.
        """
        committed = group_offsets(self.bootstrap_servers, self.group_id, self.topic, end_offsets)
        self.report.uncommitted = {
            p: (committed.get(p, -1), end)
            for p, end in end_offsets.items()
            if committed.get(p, -1) < end
        }
        return not self.report.uncommitted

    def _stop(self, replica: Replica, when: str) -> None:
        """SIGTERM must drain, commit and exit 0 in time; anything else is a failure."""
        code = replica.stop(self.stop_timeout_s)
        if code is None:
            self.report.crashes.append(f"{replica.name} hung on SIGTERM {when}")
        elif code != 0:
            tail = replica.log_path.read_text(errors="replace")[-600:]
            self.report.crashes.append(f"{replica.name} exited {code} on SIGTERM {when}: {tail}")

    def _check_crashes(self, replicas: list[Replica]) -> None:
        for replica in replicas:
            crash = replica.unexpected_exit()
            if crash is not None and replica.process is not None:
                self.report.crashes.append(crash)
                replica.process = None  # reported once
                replica.start()

    def _wait_drained(
        self,
        replicas: list[Replica],
        feed: EventFeed,
        progress: Callable[[], float],
        started: float,
    ) -> bool:
        deadline = started + self.config.timeout_s
        behind: dict[int, tuple[int, int]] | None = None
        behind_since = time.monotonic()
        while time.monotonic() < deadline:
            self._check_crashes(replicas)
            if feed.done and progress() >= 1.0:
                if self._committed_to_end(feed.end_offsets):
                    return True
                # Everything accepted but a commit does not move: a stuck replica.
                if self.report.uncommitted != behind:
                    behind, behind_since = dict(self.report.uncommitted), time.monotonic()
                elif time.monotonic() - behind_since > COMMIT_STALL_S:
                    self.echo(f"commits stalled for {COMMIT_STALL_S:g} s: {behind}")
                    return False
            time.sleep(0.2)
        return False
