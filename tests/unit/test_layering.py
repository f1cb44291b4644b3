"""The folder listing is the architecture: each stage imports only the stages below it.

    signals (pure)  <-  codec (pure decoding)  <-  connect (HTTP)  <-  kafka (the loop)  <-  cli
            config, ops: shared by all; sessions: pure, used by kafka

Pure stages never import a Kafka client or an HTTP client, and nothing in pipeline/
imports the development tooling in dev/ (the production image does not have it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"

#: stage -> the pipeline stages it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "signals": {"config"},
    "sessions": {"config", "signals"},
    "codec": {"config", "signals"},
    "connect": {"config", "signals", "ops"},
    "ops": {"config", "signals", "sessions"},
    "config": {"signals"},
    "kafka": {"config", "signals", "sessions", "codec", "connect", "ops"},
    "cli": {"config", "signals", "sessions", "codec", "connect", "ops", "kafka"},
    "__init__": set(),
    "__main__": {"cli"},
}

#: stage -> third-party modules it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "signals": ("confluent_kafka", "httpx"),
    "sessions": ("confluent_kafka", "httpx"),
    # decoding is pure; only the registry's REST client (confluent_kafka.schema_registry)
    "codec": ("confluent_kafka.cimpl", "httpx"),
    "connect": ("confluent_kafka",),
}

DEV_PACKAGES = ("devtools", "connect_sim", "benchmarks", "tests")


def _stage(path: Path) -> str:
    parts = path.relative_to(PIPELINE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            if node.module == "pipeline":
                names.extend(f"pipeline.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _forbidden_client(stage: str, name: str) -> bool:
    for forbidden in FORBIDDEN.get(stage, ()):
        if name == forbidden or name.startswith(forbidden + "."):
            return True
        # confluent_kafka itself (Consumer, Producer) is the Kafka client
        if forbidden == "confluent_kafka.cimpl" and name == "confluent_kafka":
            return True
    return False


MODULES = sorted(PIPELINE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PIPELINE)))
def test_a_stage_imports_only_the_stages_below_it(path: Path) -> None:
    stage = _stage(path)
    assert stage in ALLOWED, f"{stage}: a new stage; give it a place in ALLOWED"
    problems = []
    for name in _imports(path):
        top = name.split(".")
        if top[0] == "pipeline" and len(top) > 1:
            other = top[1]
            if other != stage and other not in ALLOWED[stage] and other != "__version__":
                problems.append(f"imports pipeline.{other} (a higher stage)")
        if top[0] in DEV_PACKAGES:
            problems.append(f"imports {name} (development tooling)")
        if _forbidden_client(stage, name):
            problems.append(f"imports {name} (pure stage)")
    assert not problems, f"{path.relative_to(PIPELINE)}: " + "; ".join(problems)


def test_the_rule_itself_catches_a_violation(tmp_path: Path) -> None:
    """A pure module importing confluent_kafka or the loop would be caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import confluent_kafka\nfrom pipeline.kafka import consumer\n")
    names = _imports(bad)
    assert _forbidden_client("signals", names[0])
    assert "kafka" not in ALLOWED["signals"]


def _layout_paths(section: str) -> set[str]:
    """Each ``x.py`` in the Layout block, resolved against the folder its entry starts with."""
    paths: set[str] = set()
    folder = ""
    for line in section.splitlines():
        words = [w.strip("`,()") for w in line.split()]
        if not words:
            continue
        if not line.startswith(" "):
            first = words[0]
            folder = first if first.endswith("/") else str(Path(first).parent) + "/"
        for word in words:
            if word.endswith(".py"):
                paths.add(word if "/" in word else folder + word)
    return paths


def test_the_readme_layout_names_every_module_and_only_real_ones() -> None:
    """README's Layout section is tested against the tree, so it cannot go stale."""
    root = PIPELINE.parent
    readme = (root / "README.md").read_text()
    section = readme.split("### Layout", 1)[1].split("```", 2)[1]
    listed = _layout_paths(section)
    modules = {
        str(p.relative_to(root)) for p in MODULES if p.name not in ("__init__.py", "__main__.py")
    }
    assert not sorted(modules - listed), f"README Layout misses: {sorted(modules - listed)}"
    unknown = sorted(path for path in listed if not (root / path).exists())
    assert not unknown, f"README Layout names files that do not exist: {unknown}"
