"""The benchmark harness still runs end to end (on a few hundred events), so it cannot rot.

Figures are not checked: only that every part ran and reported what it measured.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_benchmark_suite_runs_on_a_small_backlog() -> None:
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "cpu",
        "backlog",
        "reference",
        "--quick",
        "--events=300",
        "--reference-events=60",
        "--cpu-events=200",
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "## Machine" in out and "| cores |" in out and "| librdkafka |" in out
    assert re.search(r"\| ratio full / decode-only \| \d+\.\d\d", out), out
    rate = re.search(r"\| backlog \(300 events, 1 process\) \| events/s, [^|]+\| ([\d,]+)", out)
    assert rate and int(rate.group(1).replace(",", "")) > 0, out
    # every valid event of the backlog reached the simulator, none twice
    assert re.search(r"duplicates at the simulator \| 0 \|", out), out
    accepted = re.search(r"accepted by the simulator \| (\d+) of 60", out)
    assert accepted and int(accepted.group(1)) > 0, out
    assert re.search(r"ours / reference[^|]*\| \d+\.\dx", out), out
