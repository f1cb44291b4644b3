"""`connect-pipeline demo` for a first-time user: a progress line and the report on the
terminal, the pipeline's per-event log lines in a file the report names."""

from __future__ import annotations

import re
import uuid

import pytest
from click.testing import CliRunner

from pipeline.cli.main import main

pytestmark = pytest.mark.integration


def test_demo_shows_progress_and_report_and_keeps_log_lines_in_a_file(kafka_bootstrap, tmp_path):
    log_file = tmp_path / "demo.log"
    topic = f"demo-{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(
        main,
        ["demo", "--events", "120", "--log-file", str(log_file), "--topic", topic],
        env={"PIPELINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = result.stdout
    assert "OK: every valid event delivered" in report
    # derived abandonment: sessions closed (the last ones by the wall clock) and their
    # signals delivered, counted by type, one shown
    derived = re.search(r"^derived    (\d+) abandonment signals .*; 0 late events\)$", report, re.M)
    assert derived and int(derived.group(1)) > 0, report
    by_type = dict(re.findall(r"^  (cartAbandonment|browseAbandonment) +(\d+)$", report, re.M))
    assert sum(int(n) for n in by_type.values()) == int(derived.group(1))
    assert re.search(r"^  e\.g\. cartAbandonment of session S\d{7}-\w+: \d+ x ", report, re.M)
    assert f"{derived.group(1)} derived signals delivered" in report
    assert f"log        {log_file}" in report
    dead = int(re.search(r"^dead-lettered (\d+)$", report, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert dead > 0
    # no per-event line on the terminal: only the report (and the progress lines)
    assert "dead-lettered   " not in report and "[info" not in report
    assert len(report.splitlines()) < 40
    progress = [line for line in result.stderr.splitlines() if line.startswith("produced ")]
    assert progress, result.stderr
    assert re.fullmatch(rf"produced 123/123 +delivered \d+ +dead-lettered {dead}", progress[-1])
    # ...they are in the log file, one per dead letter
    log = log_file.read_text()
    assert len(re.findall(r"\] dead-lettered ", log)) == dead
    assert "consumer started" in log


def test_progress_line_redraws_in_place_on_a_terminal():
    import io

    from devtools.progress import Counts, ProgressLine

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    counts = iter([Counts(5, 10, 0, 0), Counts(10, 10, 7, 1)])
    line = ProgressLine(out, lambda: next(counts), interval_s=3600)
    line._show()
    line.stop()  # the final state, then a newline: the report starts on its own line
    assert out.getvalue() == (
        "\rproduced 5/10   delivered 0   dead-lettered 0"
        "\rproduced 10/10   delivered 7   dead-lettered 1\n"
    )
