"""Helpers of the operations tests: scraping /metrics, probing health, the run process."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
from devtools.stack import start_pipeline
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the metrics page: (name, sorted labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.HTTPError as error:
        return 0, {"probe_error": repr(error)}
    return response.status_code, response.json()


def run_process(env_settings: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``connect-pipeline run`` configured only by PIPELINE_* variables; stdout and
    stderr go to separate files next to ``log_path`` (.out, .err)."""
    out, err = log_path.with_suffix(".out"), log_path.with_suffix(".err")
    return start_pipeline(env_settings, out, stderr_path=err, cwd=REPO)
