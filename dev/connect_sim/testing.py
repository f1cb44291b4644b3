"""Start the simulator in a subprocess on a free port, for tests, the demo and benchmarks."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from devtools.stack import free_port


class SimulatorHandle:
    """A running simulator and its observation endpoints."""

    def __init__(self, api_key: str, app_keys: Sequence[str], args: Sequence[str]) -> None:
        self.api_key = api_key
        self.app_keys = list(app_keys)
        self.port = free_port()
        self._args = list(args)
        self._log = Path(tempfile.mkdtemp(prefix="connect-sim-")) / "sim.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=30)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/graphql"

    @property
    def pid(self) -> int | None:
        """The simulator process's id while it runs (for CPU figures)."""
        return self._process.pid if self._process is not None else None

    def start(self) -> SimulatorHandle:
        command = [
            sys.executable,
            "-m",
            "connect_sim",
            "--port",
            str(self.port),
            "--api-key",
            self.api_key,
            "--app-keys",
            ",".join(self.app_keys),
            *self._args,
        ]
        self._process = subprocess.Popen(
            command, stdout=self._log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"simulator exited: {self._log.read_text()[-2000:]}")
            try:
                if self._http.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("simulator did not become healthy")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._http.get(f"{self.base_url}/stats").json()
        return result

    def signals(self) -> list[dict[str, Any]]:
        text = self._http.get(f"{self.base_url}/signals").content
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]

    def reset(self) -> None:
        self._http.post(f"{self.base_url}/reset").raise_for_status()

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        response = self._http.post(f"{self.base_url}/admin/faults", json=faults)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@contextmanager
def run_simulator(
    api_key: str = "sim-api-key",
    app_keys: Sequence[str] = ("sim-app-key",),
    extra_args: Sequence[str] = (),
) -> Iterator[SimulatorHandle]:
    handle = SimulatorHandle(api_key, app_keys, extra_args).start()
    try:
        yield handle
    finally:
        handle.stop()
