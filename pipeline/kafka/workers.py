"""PIPELINE_WORKERS=N: N consumer processes in one group under one supervisor.

Python runs one consumer loop per core at best, so a pod with N cores runs N
``connect-pipeline run`` processes (like Kafka Connect's ``tasks.max``). Each worker is
an ordinary single-process run: same settings, same group, its own transactional id
(``<id>-<index>``: a restarted worker fences the one it replaces, and no two live
workers fence each other) and its own ops port on 127.0.0.1. The supervisor:

- serves /healthz, /readyz and /metrics on PIPELINE_HTTP_PORT, aggregated: a probe
  passes when every worker's passes (a worker waiting for its restart counts as live,
  not ready); the metrics page is every worker's, each sample labelled ``worker``,
  plus the supervisor's own (workers running, restarts);
- forwards SIGTERM and SIGINT to every worker, waits for each to drain and commit,
  and exits 0 when all exited 0;
- restarts a worker that dies (a crash, an OOM kill, a fatal librdkafka error) after
  a backoff of 1 s doubling to 30 s, without touching the others. More than
  ``MAX_FAILURES`` deaths within ``FAILURE_WINDOW_S`` means a cause a restart does not
  fix: the supervisor drains the others and exits 1, so the orchestrator shows a
  crash loop instead of the pod limping along. A worker that exits 2 (invalid
  configuration) stops everything at once with 2. A worker that exits 0 by itself
  (``--stop-after-idle``) is done and not restarted.

Workers get SIGTERM if the supervisor itself dies (Linux parent-death signal), so
no orphan keeps partitions.

On Linux the first start of each worker is a fork of the supervisor right after it read
its settings (one thread, no Kafka client, no socket yet): the workers skip the
interpreter's start and the imports (about 0.4 s each, and two interpreters importing at
once on the same cores) and join the group at once, in the same join round. A restart
runs ``connect-pipeline run`` afresh (the supervisor has threads by then).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

from pipeline.config import Settings

FIRST_BACKOFF_S: Final = 1.0
MAX_BACKOFF_S: Final = 30.0
MAX_FAILURES: Final = 5
FAILURE_WINDOW_S: Final = 300.0
#: The exit status of ``connect-pipeline run`` for an invalid configuration.
CONFIG_ERROR: Final = 2
PROBE_TIMEOUT_S: Final = 2.0


def _log() -> Any:
    # structlog and the logging set-up come after the first forks: before them, every
    # import delays both workers' join (the workers import it while the join waits)
    import structlog

    return structlog.get_logger("pipeline.kafka.workers")


# --- pure parts ------------------------------------------------------------------------------


def worker_environment(
    settings: Settings,
    index: int,
    port: int,
    base: Mapping[str, str],
    transactional_id: str,
) -> dict[str, str]:
    """The environment of worker ``index``: the supervisor's settings, one process each."""
    env = {k: v for k, v in base.items() if not k.startswith("PIPELINE_")}
    env.update(settings.as_environment())
    env["PIPELINE_WORKERS"] = "1"
    env["PIPELINE_HTTP_HOST"] = "127.0.0.1"
    env["PIPELINE_HTTP_PORT"] = str(port)
    env["PIPELINE_TRANSACTIONAL_ID"] = f"{transactional_id}-{index}"
    if settings.group_instance_id:  # static membership: one id per member
        env["PIPELINE_GROUP_INSTANCE_ID"] = f"{settings.group_instance_id}-{index}"
    return env


@dataclass
class RestartPolicy:
    """When to restart a dead worker, or that restarting has stopped making sense."""

    first_backoff_s: float = FIRST_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S
    max_failures: int = MAX_FAILURES
    window_s: float = FAILURE_WINDOW_S
    failures: deque[float] = field(default_factory=deque)

    def on_failure(self, now: float) -> float | None:
        """Seconds to wait before the restart, or None: give up."""
        self.failures.append(now)
        while self.failures and now - self.failures[0] > self.window_s:
            self.failures.popleft()
        if len(self.failures) > self.max_failures:
            return None
        backoff: float = self.first_backoff_s * 2 ** (len(self.failures) - 1)
        return min(self.max_backoff_s, backoff)


def merge_metrics(pages: Iterable[tuple[str, str]], extra: Iterable[Any] = ()) -> bytes:
    """Prometheus text pages of the workers as one page, each sample labelled with its
    ``worker``; ``extra``: metric families of the supervisor itself."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    for worker, page in pages:
        for family in text_string_to_metric_families(page):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for s in family.samples:
                labels = {**s.labels, "worker": worker}
                merged.samples.append(type(s)(s.name, labels, s.value, s.timestamp, s.exemplar))

    class _Merged:
        def collect(self) -> Iterable[Any]:
            return [*families.values(), *extra]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- processes -------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """SIGTERM to this worker when the supervisor dies (Linux PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class ForkedProcess:
    """A worker forked from the supervisor: what the supervisor uses of ``Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:  # negative: killed by that signal, as Popen says
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)


def fork_worker(env: Mapping[str, str], target: Callable[[], object]) -> ForkedProcess:
    """``target`` (one ordinary run) in a child of this process, with ``env`` as its
    environment, as if ``connect-pipeline run`` had been started with it. The child
    never returns here: it exits with the run's status."""
    for stream in (sys.stdout, sys.stderr):  # else the child writes their buffers again
        stream.flush()
    pid = os.fork()
    if pid:
        return ForkedProcess(pid)
    status: int = 1  # pragma: no cover - the child's side (its exit status is tested)
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):  # the supervisor's handlers: not ours
            signal.signal(signum, signal.SIG_DFL)
        if sys.platform == "linux":
            _die_with_parent()
        with open(os.devnull, "rb") as devnull:
            os.dup2(devnull.fileno(), 0)
        os.environ.clear()
        os.environ.update(env)
        target()
        status = 0
    except SystemExit as exit_:
        status = _exit_status(exit_.code)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()  # the run's own (a session store's close), as at an exit
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def _exit_status(code: object) -> int:
    """What the interpreter would exit with for ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


@dataclass
class Worker:
    index: int
    port: int  # 0: no ops endpoint
    env: dict[str, str]
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    process: subprocess.Popen[bytes] | ForkedProcess | None = None
    restart_at: float | None = None  # waiting for a restart after this monotonic time
    done: bool = False  # exited 0 by itself, or drained on stop
    restarts: int = 0

    def start(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.restart_at = None

    def fork(self, target: Callable[[], object]) -> None:
        self.process = fork_worker(self.env, target)
        self.restart_at = None

    def log_start(self, how: str) -> None:
        assert self.process is not None
        _log().info(f"worker {how}", worker=self.index, pid=self.process.pid, port=self.port)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)


class Supervisor:
    """Starts the workers, restarts the dead, drains all on a signal. Main thread only."""

    def __init__(
        self,
        settings: Settings,
        worker_argv: list[str],
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        policy: Callable[[], RestartPolicy] = RestartPolicy,
        fork: Callable[[], object] | None = None,
    ) -> None:
        """``fork``: a worker's run, for first starts forked from this process (restarts
        and, without it, first starts too run ``worker_argv``)."""
        self._argv = worker_argv
        self._fork = fork
        self._clock = clock
        self._wake = threading.Event()
        self._stopping = False
        base = os.environ if environ is None else environ
        tx_id = settings.replica_transactional_id()
        self.workers = []
        for index in range(settings.workers):
            port = free_port() if settings.http_port else 0
            env = worker_environment(settings, index, port, base, tx_id)
            self.workers.append(Worker(index, port, env, policy()))

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Drain every worker (signal-handler safe: sets flags, sends signals)."""
        self._stopping = True
        for w in self.workers:
            w.signal(signum)
        self._wake.set()

    def start(self) -> None:
        """Every worker's first start (before any thread of this process: forks)."""
        for w in self.workers:
            if w.process is not None:
                continue
            if self._fork is not None:
                w.fork(self._fork)
            else:
                w.start(self._argv)

    def run(self) -> int:
        """Until every worker is done; the exit status of ``connect-pipeline run``."""
        self.start()
        status = 0
        while not all(w.done for w in self.workers):
            self._wake.wait(0.2)
            self._wake.clear()
            status = max(status, self._check())
        return status

    def _check(self) -> int:
        """Notices exits, restarts what is due; the exit status so far."""
        status = 0
        now = self._clock()
        for w in self.workers:
            if w.done:
                continue
            if w.restart_at is not None:
                if self._stopping:
                    w.done = True
                elif now >= w.restart_at:
                    w.restarts += 1
                    w.start(self._argv)
                    w.log_start("started")
                continue
            assert w.process is not None
            code = w.process.poll()
            if code is None:
                continue
            if code == 0 or self._stopping:
                w.done = True
                status = max(status, 0 if code == 0 else 1)
                _log().info("worker exited", worker=w.index, code=code)
                continue
            if code == CONFIG_ERROR:
                _log().error("worker exited: invalid configuration; stopping", worker=w.index)
                w.done = True
                self.stop()
                return CONFIG_ERROR
            delay = w.policy.on_failure(now)
            if delay is None:
                _log().error(
                    "worker keeps dying; draining the others and exiting",
                    worker=w.index,
                    code=code,
                    failures=len(w.policy.failures),
                    window_s=w.policy.window_s,
                )
                w.done = True
                self.stop()
                return 1
            _log().warning("worker died; restarting", worker=w.index, code=code, in_s=delay)
            w.restart_at = now + delay
        return status

    # --- the aggregated ops endpoint ---------------------------------------------------------

    def probe(self, path: str) -> tuple[bool, dict[str, Any]]:
        """Every worker's /healthz or /readyz; a worker waiting to restart is live, not ready."""
        import httpx

        ok = True
        details: dict[str, Any] = {}
        for w in self.workers:
            answer: dict[str, Any]
            if w.done:
                passed, answer = True, {"done": True}
            elif not w.running:
                passed, answer = path == "/healthz", {"restarting": True}
            else:
                try:
                    response = httpx.get(
                        f"http://127.0.0.1:{w.port}{path}", timeout=PROBE_TIMEOUT_S
                    )
                    passed, answer = response.status_code == 200, response.json()
                except (httpx.HTTPError, ValueError) as error:
                    passed, answer = False, {"probe_error": type(error).__name__}
            assert w.process is not None or not w.running
            pid = w.process.pid if w.process is not None else None
            details[f"worker_{w.index}"] = {"ok": passed, "pid": pid, **answer}
            ok = ok and passed
        return ok, details

    def metrics_page(self) -> tuple[bytes, str]:
        import httpx
        from prometheus_client import CONTENT_TYPE_LATEST
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        pages = []
        for w in self.workers:
            if w.running:
                with contextlib.suppress(httpx.HTTPError):
                    url = f"http://127.0.0.1:{w.port}/metrics"
                    pages.append((str(w.index), httpx.get(url, timeout=PROBE_TIMEOUT_S).text))
        running = GaugeMetricFamily(
            "connect_signals_workers_running", "Worker processes running.", labels=[]
        )
        running.add_metric([], sum(w.running for w in self.workers))
        restarts = CounterMetricFamily(
            "connect_signals_worker_restarts",
            "Worker processes restarted after they died.",
            labels=["worker"],
        )
        for w in self.workers:
            restarts.add_metric([str(w.index)], w.restarts)
        return merge_metrics(pages, [running, restarts]), CONTENT_TYPE_LATEST


class _AggregatedHealth:
    """The HealthState interface the ops server reads, answered by the workers."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        return self._supervisor.probe("/healthz")

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self._supervisor.probe("/readyz")


def supervise(
    settings: Settings, worker_args: list[str], run_worker: Callable[[], object] | None = None
) -> int:
    """Run ``settings.workers`` workers until they are done; the exit status.
    ``run_worker``: one worker's run, forked for first starts (Linux)."""
    fork = run_worker if sys.platform == "linux" else None
    argv = [sys.executable, "-m", "pipeline.cli.main", "run", *worker_args]
    supervisor = Supervisor(settings, argv, fork=fork)
    # First, from a process of one thread that imported and set up nothing it does not
    # need for this: the workers join the group while the rest is built.
    supervisor.start()
    from pipeline.ops.health import HealthServer
    from pipeline.ops.logs import configure_logging

    configure_logging(settings)
    for w in supervisor.workers:
        w.log_start("forked" if fork is not None else "started")

    def handle(signum: int, frame: FrameType | None) -> None:
        supervisor.stop(signum)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    server = None
    if settings.http_port:
        server = HealthServer(
            settings.http_host,
            settings.http_port,
            _AggregatedHealth(supervisor),  # type: ignore[arg-type]
            supervisor.metrics_page,
        ).start()
    _log().info("supervisor started", workers=settings.workers)
    try:
        return supervisor.run()
    finally:
        if server is not None:
            server.stop()
