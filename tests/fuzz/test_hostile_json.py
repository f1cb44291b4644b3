"""Hostile input through the offline check (JSON Lines -> validate -> map).

The check command is the other entry to the same path; every line must give a verdict
(a signal or a rejection with a short message), never an exception.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from pipeline.cli.main import main
from pipeline.signals import catalog
from pipeline.signals.check import CheckOptions, check_lines
from pipeline.signals.mapping import MappingOptions
from tests.fuzz.hostile import CORPUS, MAX_MESSAGE_CHARS, check_signal
from tests.fuzz.test_hostile_input import FUZZ, hostile_text
from tests.spec_examples import full_event

OPTIONS: Final = CheckOptions(MappingOptions(default_app_key="fuzz-app"))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)


def verdict_of(line: str) -> dict[str, Any]:
    (verdict,) = list(check_lines([line], OPTIONS))
    json.dumps(verdict, ensure_ascii=False, allow_nan=False).encode("utf-8")
    if verdict["ok"]:
        check_signal(verdict["signal"])
    else:
        assert verdict["message"] and len(verdict["message"]) <= MAX_MESSAGE_CHARS
    return verdict


@FUZZ
@given(data=st.data(), signal_type=st.sampled_from(catalog.SIGNAL_TYPES))
def test_any_json_in_any_field(data: st.DataObject, signal_type: str) -> None:
    event = full_event(signal_type)
    for name in data.draw(st.lists(st.sampled_from(sorted(event)), max_size=4, unique=True)):
        event[name] = data.draw(json_values, label=name)
    extra = data.draw(st.dictionaries(hostile_text, json_values, max_size=2), label="extra")
    # allow_nan: NaN and Infinity literals are what a careless producer writes.
    verdict_of(json.dumps({**event, **extra}, allow_nan=True))


@FUZZ
@given(st.text(max_size=200))
def test_any_line(line: str) -> None:
    if line.strip():
        verdict_of(line.replace("\n", " ").replace("\r", " "))


def test_nan_and_infinity_literals() -> None:
    for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
        line = json.dumps(full_event("order")).replace(
            '"orderValue": 12.5', f'"orderValue": {literal}'
        )
        verdict = verdict_of(line)
        assert not verdict["ok"] and verdict["field"] == "orderValue"
        assert "finite" in verdict["message"]
    assert not math.isfinite(float("1e400"))


EXPECTED: Final = {
    "json-deep-nesting.jsonl": ("", "not valid JSON: nested too deeply"),
    "json-deep-object.jsonl": ("", "not valid JSON: nested too deeply"),
    "json-5000-digit-number.jsonl": ("", "not valid JSON: a number has too many digits"),
    "json-unpaired-surrogate.jsonl": ("sessionId", "sessionId: must be valid Unicode text"),
    "json-huge-quantity.jsonl": (
        "orderedItems[0].itemQuantity",
        "orderedItems[0].itemQuantity: must be at most 2147483647",
    ),
    "json-signal-type-object.jsonl": ("signalType", "signalType: must be a string"),
    "json-long-unknown-keys.jsonl": (
        "identifiableAttributes." + "x" * 59 + "…",
        "identifiableAttributes." + "x" * 59 + "…: unknown field",
    ),
}


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.jsonl")), ids=lambda p: p.name)
def test_json_corpus(path: Path) -> None:
    (line,) = path.read_text(encoding="utf-8").splitlines()
    verdict = verdict_of(line)
    if path.name in EXPECTED:
        field, message = EXPECTED[path.name]
        assert not verdict["ok"]
        assert verdict["field"] == field and verdict["message"].startswith(message)


def test_check_command_survives_the_whole_corpus() -> None:
    paths = sorted(CORPUS.glob("*.jsonl"))
    assert set(EXPECTED) <= {p.name for p in paths}
    text = "".join(p.read_text(encoding="utf-8") for p in paths)
    result = CliRunner().invoke(main, ["check", "--app-key", "a", "-"], input=text)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(verdicts) == len(paths) and not any(v["ok"] for v in verdicts)
