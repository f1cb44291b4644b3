"""The live parts of a chaos run: consumer replicas and the event feed."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from confluent_kafka import Producer

from devtools.clickstream import GeneratedEvent
from devtools.producer import EventEncoder
from devtools.stack import start_pipeline, stop_process
from pipeline.config import DEFAULT_AVRO_DIR, Settings

MIN_UPTIME_S: Final = 8.0


class Replica:
    """One ``connect-pipeline run`` process that can be killed and restarted."""

    def __init__(self, name: str, settings: Settings, log_dir: Path) -> None:
        self.name = name
        self._settings = settings
        self._env = {
            "PYTHONUNBUFFERED": "1",  # logs survive a kill
            # Two replicas on one host: the default id (group + host name) would make
            # them fence each other; a restart keeps its id and fences its old self.
            "PIPELINE_TRANSACTIONAL_ID": f"{settings.group_id}-{name}",
        }
        self._log_dir = log_dir
        self._starts = 0
        self._stopped = False  # ended on purpose: not a crash
        self.process: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []  # each incarnation's exit status (-9: our SIGKILL)
        self.started_at = 0.0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self._log_dir / f"replica-{self.name}-{self._starts}.log"

    def record_exit(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            self.exits.append(self.process.returncode)

    def start(self) -> None:
        self.record_exit()
        self._starts += 1
        self.started_at = time.monotonic()
        self._stopped = False
        self.process = start_pipeline(self._settings, self.log_path, extra_env=self._env)

    def kill(self) -> None:
        self._stopped = True
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM and wait; the exit status, or None if it hung (then it is killed)."""
        self._stopped = True
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        # A SIGTERM before the interpreter has installed its handler just kills it:
        # give a fresh process time to come up (a pod gets the same grace).
        time.sleep(max(0.0, self.started_at + MIN_UPTIME_S - time.monotonic()))
        return stop_process(self.process, timeout_s)

    def unexpected_exit(self) -> str | None:
        """A description when the process ended by itself."""
        if self._stopped or self.process is None or self.process.poll() is None:
            return None
        tail = self.log_path.read_text(errors="replace")[-600:]
        return f"{self.name} exited {self.process.returncode} on its own: {tail}"


class EventFeed:
    """Produces the events: a first part at once, the rest at a steady rate meanwhile."""

    def __init__(self, bootstrap: str, topic: str, events: Sequence[GeneratedEvent]) -> None:
        self._topic = topic
        self._events = events
        self._encoder = EventEncoder(DEFAULT_AVRO_DIR)
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20}
        )
        self.acknowledged = 0
        self.end_offsets: dict[int, int] = {}  # partition -> one past the last written
        self.failures: list[str] = []
        self.invalid_values: set[bytes] = set()
        self._thread: threading.Thread | None = None

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is None:
            self.acknowledged += 1
            partition, end = message.partition(), message.offset() + 1
            self.end_offsets[partition] = max(end, self.end_offsets.get(partition, 0))
        else:
            self.failures.append(str(error))

    def _produce(self, events: Sequence[GeneratedEvent], rate: float | None) -> None:
        started = time.monotonic()
        for n, event in enumerate(events):
            value = self._encoder.encode(event)
            if event.invalid:
                self.invalid_values.add(value)
            key = str(event.record["sessionId"]).encode()
            while True:
                try:
                    self._producer.produce(
                        self._topic, key=key, value=value, on_delivery=self._on_delivery
                    )
                    break
                except BufferError:
                    self._producer.poll(0.1)
            if n % 200 == 0:
                self._producer.poll(0)
                if rate:
                    ahead = started + n / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        self._producer.flush(300)

    def produce_first(self, count: int) -> None:
        self._produce(self._events[:count], None)

    def start_rest(self, count_done: int, rate: float) -> None:
        rest = self._events[count_done:]
        self._thread = threading.Thread(target=self._produce, args=(rest, rate), daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)
