"""The session stage is pure: importing it loads no Kafka client and no HTTP client."""

from __future__ import annotations

import subprocess
import sys


def test_sessions_import_no_kafka_and_no_http() -> None:
    code = (
        "import sys, pipeline.sessions.store, pipeline.sessions.offline;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " {'confluent_kafka', 'httpx', 'httpcore', 'urllib3', 'requests'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
