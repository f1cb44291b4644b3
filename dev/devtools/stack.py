"""One development stack: a broker, topics, free ports, the Connect simulator and
``connect-pipeline`` processes, for the tests, the benchmarks, the chaos run and the demo.

The broker is the Kafka named by ``PIPELINE_KAFKA_BOOTSTRAP_SERVERS`` (the pipeline's own
setting, so one variable points everything at a real Kafka), else an embedded Tansu
broker started here. ``KAFKA_BOOTSTRAP_SERVERS``, the tests' and benchmarks' old name,
is honoured for one release, with a warning.

A child ``connect-pipeline`` is configured only by its environment, as it is deployed:
this process's environment without any ``PIPELINE_*`` (a developer's shell never leaks
into a child), then the settings given.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Final

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from pipeline.config import Settings

if TYPE_CHECKING:  # both import this module: imported where used
    from connect_sim.testing import SimulatorHandle

    from devtools.broker import EmbeddedBroker

BOOTSTRAP_ENV: Final = "PIPELINE_KAFKA_BOOTSTRAP_SERVERS"
#: The old name of the same thing (tests, benchmarks): an alias for one release.
OLD_BOOTSTRAP_ENV: Final = "KAFKA_BOOTSTRAP_SERVERS"
TOPIC_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 5.0
#: The command line of ``connect-pipeline`` with this interpreter (no PATH lookup).
RUN_COMMAND: Final = (sys.executable, "-m", "pipeline.cli.main")


# --- ports -----------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (all held until all are found)."""
    with ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port() -> int:
    return free_ports(1)[0]


# --- the broker ------------------------------------------------------------------------------


def external_bootstrap(environ: Mapping[str, str] = os.environ) -> str | None:
    """The external Kafka's bootstrap servers, or None: start the embedded broker."""
    configured = environ.get(BOOTSTRAP_ENV)
    if configured:
        return configured
    old = environ.get(OLD_BOOTSTRAP_ENV)
    if old:
        warnings.warn(
            f"{OLD_BOOTSTRAP_ENV} is deprecated for one release: set {BOOTSTRAP_ENV}",
            FutureWarning,
            stacklevel=2,
        )
    return old or None


@dataclass(frozen=True, slots=True)
class Kafka:
    bootstrap_servers: str
    broker: EmbeddedBroker | None  # None: an external Kafka (not ours to pause or stop)


@contextmanager
def kafka(external: str | None = None, *, log_dir: Path | None = None) -> Iterator[Kafka]:
    """The external Kafka (``external``, else the environment's), or an embedded broker
    for the block."""
    bootstrap = external or external_bootstrap()
    if bootstrap:
        yield Kafka(bootstrap, None)
        return
    from devtools.broker import EmbeddedBroker

    with EmbeddedBroker(log_dir=log_dir) as broker:
        yield Kafka(broker.bootstrap_servers, broker)


# --- topics ----------------------------------------------------------------------------------


def create_topics(
    bootstrap: str, topics: Mapping[str, int], timeout_s: float = TOPIC_TIMEOUT_S
) -> None:
    """Create the topics (name -> partitions; one that exists is left as it is) and
    return once the broker's metadata shows each with its partitions: a consumer that
    subscribes next sees them all."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, n, 1) for name, n in topics.items()], operation_timeout=timeout_s
    )
    created = dict(topics)
    for name, future in futures.items():
        try:
            future.result(timeout_s)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            del created[name]  # its partition count is whatever it has
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=5).topics
        missing = [
            name
            for name in topics
            if name not in metadata
            or not metadata[name].partitions
            or (name in created and len(metadata[name].partitions) != created[name])
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not in the broker's metadata in {timeout_s} s: {missing}")
        time.sleep(0.1)


def new_topics(bootstrap: str, prefix: str, partitions: int) -> tuple[str, str]:
    """A fresh source topic ``<prefix>-<random>`` and its dead-letter topic (``-dlq``)."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}-dlq"
    create_topics(bootstrap, {topic: partitions, dlq: 1})
    return topic, dlq


# --- the Connect simulator -------------------------------------------------------------------


@contextmanager
def simulator(
    api_key: str, app_keys: Sequence[str], extra_args: Sequence[str] = ()
) -> Iterator[SimulatorHandle]:
    """The Connect simulator in its own process on a free port, healthy, for the block."""
    from connect_sim.testing import run_simulator

    with run_simulator(api_key=api_key, app_keys=app_keys, extra_args=extra_args) as handle:
        yield handle


# --- pipeline processes ----------------------------------------------------------------------


def pipeline_environment(
    config: Settings | Mapping[str, str],
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """The environment of a child ``connect-pipeline``: ``base`` without ``PIPELINE_*``,
    then ``config`` (settings, or ``PIPELINE_*`` variables), then ``extra``."""
    env = {k: v for k, v in base.items() if not k.startswith("PIPELINE_")}
    env |= config.as_environment() if isinstance(config, Settings) else config
    return env | dict(extra or {})


def start_pipeline(
    config: Settings | Mapping[str, str],
    log_path: Path,
    *,
    args: Sequence[str] = ("run",),
    extra_env: Mapping[str, str] | None = None,
    stderr_path: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``connect-pipeline ARGS`` as a child configured by ``config``; its output appended
    to ``log_path`` (stderr to ``stderr_path`` when given)."""
    with ExitStack() as files:
        stdout = files.enter_context(log_path.open("ab"))
        stderr = files.enter_context(stderr_path.open("ab")) if stderr_path else None
        return subprocess.Popen(
            [*RUN_COMMAND, *args],
            env=pipeline_environment(config, extra_env),
            stdout=stdout,
            stderr=stderr or subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM and wait: its exit status; None if it hung (then it is killed)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
            return None
    return process.returncode


@contextmanager
def loopback_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on a free 127.0.0.1 port for the block; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # a short poll interval: shutdown() waits for it
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
