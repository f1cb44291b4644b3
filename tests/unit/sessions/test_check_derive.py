"""``connect-pipeline check --derive FILE``: derived abandonment offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from pipeline.cli.main import main
from tests.unit.sessions.script import GAP_S, add, at, order, page, view


def run(tmp_path: Path, events: list[Any], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    path = tmp_path / "sessions.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--derive", *args, str(path)])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, lines, result.stderr


def test_derives_from_a_session_file(tmp_path: Path) -> None:
    events = [
        add("cart", 0, "A", 2),
        add("paid", 0, "B"),
        order("paid", 30),
        view("browse", 10, "C"),
        page("later", 2 * (GAP_S + 60)),  # its event time closes the three above
    ]
    code, lines, stderr = run(tmp_path, events)
    assert code == 0
    assert [(v["derived"], v["sessionId"], v["line"]) for v in lines] == [
        ("cartAbandonment", "cart", 5),  # in the order they expire
        ("browseAbandonment", "browse", 5),
    ]
    cart = lines[0]
    assert cart["ok"] is True
    assert cart["signal"]["signalContent"]["signalTimestamp"] == at(GAP_S)
    assert cart["idempotencyKey"].startswith("cartAbandonment-")
    assert "sessions 3, derived: browseAbandonment 1, cartAbandonment 1" in stderr


def test_sessions_open_at_the_end_of_the_file_expire_there(tmp_path: Path) -> None:
    code, lines, _ = run(tmp_path, [add("s", 0, "A")], "--kinds", "cart")
    assert code == 0
    assert [(v["derived"], v["line"]) for v in lines] == [("cartAbandonment", None)]


def test_only_the_kinds_asked_for(tmp_path: Path) -> None:
    code, lines, _ = run(tmp_path, [add("s", 0, "A"), view("t", 0, "B")], "--kinds", "browse")
    assert code == 0
    assert [v["derived"] for v in lines] == ["browseAbandonment"]


def test_rejected_lines_are_shown_and_count_for_no_session(tmp_path: Path) -> None:
    bad = {**add("s", 0, "A"), "currency": "USX"}
    code, lines, stderr = run(tmp_path, [bad, page("s", 10)], "--session-gap-s", "60")
    assert code == 1
    assert [(v["ok"], v["line"]) for v in lines] == [(False, 1)]
    assert lines[0]["field"] == "currency"
    assert "1 line(s) rejected" in stderr


def test_a_tier_without_abandonment_is_refused(tmp_path: Path) -> None:
    code, _, stderr = run(tmp_path, [page("s", 0)], "--tier", "Pro")
    assert code == 2
    assert "--derive needs a tier with abandonment signals" in stderr
