"""The supervisor of PIPELINE_WORKERS, with real child processes standing in for workers
(no broker: what is tested is what it does when they exit), and its pure parts."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import Settings
from pipeline.kafka.workers import RestartPolicy, Supervisor, merge_metrics, worker_environment

SETTINGS = Settings(
    kafka_bootstrap_servers="127.0.0.1:1", topics=["t"], group_id="g", workers=2, http_port=0
)


def quick() -> RestartPolicy:
    return RestartPolicy(first_backoff_s=0.01, max_backoff_s=0.02, max_failures=2, window_s=60)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_backoff_doubles_to_its_cap_and_gives_up_after_too_many_deaths_in_the_window() -> None:
    policy = RestartPolicy(first_backoff_s=1, max_backoff_s=4, max_failures=4, window_s=100)
    assert [policy.on_failure(t) for t in (0, 1, 2, 3)] == [1, 2, 4, 4]
    assert policy.on_failure(4) is None  # a fifth death within 100 s
    later = RestartPolicy(first_backoff_s=1, max_backoff_s=4, max_failures=1, window_s=10)
    assert later.on_failure(0) == 1
    assert later.on_failure(20) == 1  # the first death left the window


def test_each_worker_has_its_own_transactional_id_port_and_one_process() -> None:
    base = {"PATH": "/bin", "PIPELINE_WORKERS": "2", "PIPELINE_STALE": "x"}
    envs = [worker_environment(SETTINGS, i, 9000 + i, base, "g-host") for i in range(2)]
    assert [e["PIPELINE_TRANSACTIONAL_ID"] for e in envs] == ["g-host-0", "g-host-1"]
    assert [e["PIPELINE_HTTP_PORT"] for e in envs] == ["9000", "9001"]
    assert all(e["PIPELINE_WORKERS"] == "1" and e["PATH"] == "/bin" for e in envs)
    assert all("PIPELINE_STALE" not in e for e in envs)  # settings, not stray variables
    static = SETTINGS.model_copy(update={"group_instance_id": "pod-a"})
    env = worker_environment(static, 1, 0, {}, "g-pod-a")
    assert env["PIPELINE_GROUP_INSTANCE_ID"] == "pod-a-1"


def test_metrics_pages_merge_with_a_worker_label() -> None:
    page = '# HELP c_total n\n# TYPE c_total counter\nc_total{k="a"} 3.0\n'
    merged = merge_metrics([("0", page), ("1", page.replace("3.0", "4.0"))]).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(merged)
        for s in family.samples
    }
    assert samples == {
        ("c_total", (("k", "a"), ("worker", "0"))): 3.0,
        ("c_total", (("k", "a"), ("worker", "1"))): 4.0,
    }


def test_sigterm_drains_every_worker_and_exits_0(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import pathlib, signal, sys, os\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        f"pathlib.Path({str(ready)!r} + str(os.getpid())).touch()\n"
        "signal.pause()\n"
    )
    supervisor = Supervisor(SETTINGS, _python(code), environ={})
    _stop_once_both_ready(supervisor, tmp_path)


def test_a_worker_that_keeps_dying_stops_the_supervisor_with_1() -> None:
    supervisor = Supervisor(SETTINGS, _python("import sys; sys.exit(3)"), environ={}, policy=quick)
    assert supervisor.run() == 1
    assert max(w.restarts for w in supervisor.workers) == quick().max_failures


def test_a_worker_with_an_invalid_configuration_stops_the_supervisor_with_2() -> None:
    """A restart cannot fix a configuration: exit 2 at once, as one process would."""
    supervisor = Supervisor(SETTINGS, _python("import sys; sys.exit(2)"), environ={})
    started = time.monotonic()
    assert supervisor.run() == 2
    assert time.monotonic() - started < 10
    assert all(w.restarts == 0 for w in supervisor.workers)


def test_workers_that_finish_by_themselves_are_not_restarted() -> None:
    supervisor = Supervisor(SETTINGS, _python("pass"), environ={})
    assert supervisor.run() == 0
    assert all(w.restarts == 0 and w.done for w in supervisor.workers)


def test_forked_workers_run_with_their_own_environment_and_restart_by_exec(
    tmp_path: Path,
) -> None:
    """First starts fork this process (the target sees the worker's environment, exits
    as an interpreter would); a restart runs the command line afresh."""

    def target() -> None:
        env = os.environ
        mark = tmp_path / f"forked{env['PIPELINE_TRANSACTIONAL_ID'][-2:]}"
        mark.write_text(f"{os.getpid()} {env['PIPELINE_WORKERS']}")
        sys.exit(3)  # dies: its restart is the command line

    restarted = (
        "import os, pathlib\n"
        f"pathlib.Path({str(tmp_path)!r}, 'exec' + os.environ['PIPELINE_TRANSACTIONAL_ID'][-2:])"
        ".touch()"
    )
    supervisor = Supervisor(SETTINGS, _python(restarted), environ={}, policy=quick, fork=target)
    assert supervisor.run() == 0
    assert [w.restarts for w in supervisor.workers] == [1, 1]
    marks = sorted(p.name for p in tmp_path.iterdir())
    assert marks == ["exec-0", "exec-1", "forked-0", "forked-1"]
    for index in "01":
        pid, workers = (tmp_path / f"forked-{index}").read_text().split()
        assert int(pid) != os.getpid() and workers == "1"


def test_sigterm_drains_forked_workers_and_exits_0(tmp_path: Path) -> None:
    def target() -> None:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # as runner.run installs
        atexit.register((tmp_path / f"closed{os.getpid()}").touch)  # run at its exit
        (tmp_path / f"ready{os.getpid()}").touch()
        signal.pause()

    supervisor = Supervisor(SETTINGS, _python("raise SystemExit(9)"), environ={}, fork=target)
    _stop_once_both_ready(supervisor, tmp_path)
    assert all(w.restarts == 0 for w in supervisor.workers)
    assert len(list(tmp_path.glob("closed*"))) == 2


def _stop_once_both_ready(supervisor: Supervisor, tmp_path: Path) -> None:
    """Run it, SIGTERM it once both workers said ready; it drains them and returns 0."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()))
    thread.start()
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("ready*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.stop()
    thread.join(30)
    assert result == [0]
    assert all(w.process is not None and w.process.returncode == 0 for w in supervisor.workers)
