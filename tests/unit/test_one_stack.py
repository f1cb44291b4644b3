"""One module starts brokers, topics, simulators and pipeline processes for the tests, the
benchmarks, the chaos run and the demo: ``devtools.stack`` (the Tansu process itself in
``devtools.broker``). A second copy of any of it fails here, naming the file and line.

``pipeline/`` is not scanned: the product creates its own topics and supervises its own
workers, and never imports dev tooling.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "benchmarks", "dev")
HOME = {Path("dev/devtools/stack.py"), Path("dev/devtools/broker.py")}

#: What only the stack does, by the code that does it.
COPIES = {
    "creates topics": re.compile(r"\bNewTopic\("),
    "defines a free port": re.compile(r"def _?free_ports?\("),
    "starts Tansu": re.compile(r"\bbroker_binary\(\)"),
    "launches connect-pipeline": re.compile(r"""["']-m["'],\s*["']pipeline(\.cli\.main)?["']"""),
    "reads the external broker's variable": re.compile(
        r"""environ(\.get\(|\[)\s*["'](PIPELINE_)?KAFKA_BOOTSTRAP_SERVERS["']"""
    ),
}

#: Known exceptions, each with its reason.
ALLOWED = {
    # `produce` is a user command: it creates its topic only when absent, retrying
    # until a broker that is still coming up answers (docker-compose).
    (Path("dev/devtools/produce.py"), "creates topics"),
    # the ledger benchmark reads the replay child's stdout and its rusage (wait4)
    (Path("benchmarks/ledger.py"), "launches connect-pipeline"),
}


def copies_in(path: Path, text: str) -> list[str]:
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for what, pattern in COPIES.items():
            if pattern.search(line) and (path, what) not in ALLOWED:
                found.append(f"{path}:{n} {what}: {line.strip()}")
    return found


def test_only_the_stack_starts_brokers_topics_and_pipeline_processes() -> None:
    found = []
    for top in SCANNED:
        for file in sorted((REPO / top).rglob("*.py")):
            path = file.relative_to(REPO)
            if path in HOME or path == Path(__file__).relative_to(REPO):
                continue
            found += copies_in(path, file.read_text(encoding="utf-8"))
    assert found == [], "use devtools.stack:\n" + "\n".join(found)


def test_the_check_sees_each_kind_of_copy() -> None:
    sample = Path("tests/x.py")
    text = "\n".join(
        [
            "admin.create_topics([NewTopic(t, 1, 1)])",
            "def free_port() -> int:",
            "cmd = [broker_binary(), 'broker']",
            'argv = [sys.executable, "-m", "pipeline.cli.main", "run"]',
            'bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")',
        ]
    )
    assert [line.split(" ", 1)[0] for line in copies_in(sample, text)] == [
        f"tests/x.py:{n}" for n in range(1, 6)
    ]
    assert copies_in(Path("dev/devtools/produce.py"), "NewTopic(t, 1, 1)") == []
