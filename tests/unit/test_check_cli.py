"""``connect-pipeline check``: JSON Lines in, one JSON verdict per line out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from click.testing import CliRunner, Result
from graphql import FieldNode, OperationDefinitionNode, parse
from graphql.utilities import value_from_ast_untyped

from pipeline.cli.main import main
from pipeline.signals import catalog
from tests.spec_examples import minimal_event

EXAMPLES: Final = Path(__file__).resolve().parents[2] / "examples" / "events.jsonl"


def run(args: list[str], stdin: str | None = None) -> tuple[Result, list[dict[str, Any]]]:
    result = CliRunner().invoke(main, ["check", *args], input=stdin, catch_exceptions=False)
    verdicts = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result, verdicts


def jsonl(*events: Any) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "events.jsonl"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_valid_lines(tmp_path: Path) -> None:
    events = [minimal_event(t) for t in catalog.SIGNAL_TYPES]
    result, verdicts = run([write(tmp_path, jsonl(*events))])
    assert result.exit_code == 0
    assert len(verdicts) == len(events)
    for number, (verdict, event) in enumerate(zip(verdicts, events, strict=True), start=1):
        assert verdict["line"] == number
        assert verdict["ok"] is True
        assert verdict["idempotencyKey"] == event["eventId"]
        signal = verdict["signal"]
        assert signal["appKey"] == event["appKey"]
        assert signal["sessionId"] == event["sessionId"]
        assert signal["identifiableAttributes"] == event["identifiableAttributes"]
        assert signal["signalContent"]["signalType"] == event["signalType"]
        assert signal["signalContent"]["signalTimestamp"] == "2025-08-31T08:29:30.001Z"
        for name in catalog.SIGNALS[event["signalType"]].required:
            assert name in signal["signalContent"]
        assert "mutation" not in verdict


def test_invalid_line_names_field_and_rule(tmp_path: Path) -> None:
    good = minimal_event("pageView")
    bad = {**minimal_event("order"), "currency": "USX"}
    result, verdicts = run([write(tmp_path, jsonl(good, bad, good))])
    assert result.exit_code == 1
    assert [v["ok"] for v in verdicts] == [True, False, True]
    verdict = verdicts[1]
    assert verdict["line"] == 2
    assert verdict["reason"] == "validation"
    assert verdict["field"] == "currency"
    assert verdict["message"] == "currency: 'USX' is not an ISO 4217 code"
    assert verdict["errors"] == [{"field": "currency", "rule": "'USX' is not an ISO 4217 code"}]
    assert "1 line(s) rejected" in result.stderr


def test_invalid_json_line_is_undecodable(tmp_path: Path) -> None:
    text = jsonl(minimal_event("pageView")) + '{"signalType": "pageView", \n' + "\n\n"
    result, verdicts = run([write(tmp_path, text)])
    assert result.exit_code == 1
    assert len(verdicts) == 2  # the blank lines give no verdict
    assert verdicts[1]["line"] == 2
    assert verdicts[1]["ok"] is False
    assert verdicts[1]["reason"] == "undecodable"
    assert verdicts[1]["message"].startswith("not valid JSON")


def test_non_object_and_untyped_lines() -> None:
    untyped = {k: v for k, v in minimal_event("pageView").items() if k != "signalType"}
    result, verdicts = run(["-"], stdin=jsonl([1, 2], untyped))
    assert result.exit_code == 1
    assert verdicts[0]["message"] == "an event must be a JSON object"
    assert verdicts[1]["field"] == "signalType"
    assert verdicts[1]["message"] == "signalType: required"


def test_stdin_input() -> None:
    event = {**minimal_event("onSiteSearch"), "numberOfResults": 0}
    for args in ([], ["-"]):
        result, verdicts = run(args, stdin=jsonl(event))
        assert result.exit_code == 0
        (verdict,) = verdicts
        assert verdict["signal"]["signalContent"]["effect"] == "negative"


def test_graphql_adds_a_parseable_mutation() -> None:
    result, verdicts = run(["--graphql"], stdin=jsonl(minimal_event("order")))
    assert result.exit_code == 0
    (verdict,) = verdicts
    document = parse(verdict["mutation"])
    (operation,) = document.definitions
    assert isinstance(operation, OperationDefinitionNode)
    (field,) = operation.selection_set.selections
    assert isinstance(field, FieldNode) and field.name.value == "createSignals"
    (argument,) = field.arguments or ()
    assert value_from_ast_untyped(argument.value) == [verdict["signal"]]


def test_tier_pro_rejects_page_view_with_reason_subscription() -> None:
    text = jsonl(minimal_event("pageView"), minimal_event("order"))
    result, verdicts = run(["--tier", "Pro"], stdin=text)
    assert result.exit_code == 1
    assert verdicts[0]["ok"] is False
    assert verdicts[0]["reason"] == "subscription"
    assert verdicts[0]["field"] == "signalType"
    assert verdicts[1]["ok"] is True
    result, verdicts = run(["--tier", "Premium"], stdin=text)
    assert result.exit_code == 0


def test_app_key_default_and_anonymous() -> None:
    event = {**minimal_event("pageView"), "appKey": None, "identifiableAttributes": {}}
    result, verdicts = run([], stdin=jsonl(event))
    assert result.exit_code == 1
    assert verdicts[0]["field"] == "appKey"
    result, verdicts = run(["--app-key", "dflt"], stdin=jsonl(event))
    assert verdicts[0]["field"] == "identifiableAttributes"
    result, verdicts = run(["--app-key", "dflt", "--allow-anonymous"], stdin=jsonl(event))
    assert result.exit_code == 0
    assert verdicts[0]["signal"]["appKey"] == "dflt"
    assert verdicts[0]["signal"]["identifiableAttributes"] == {}


def test_bundled_examples() -> None:
    """examples/events.jsonl: every `bad-` event is rejected, every other one passes."""
    lines = [json.loads(line) for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
    bad = [e["eventId"].startswith("bad-") for e in lines]
    assert 30 <= len(lines) <= 50 and 4 <= sum(bad) <= 8
    for event in lines:
        assert {"signalType", "eventId", "sessionId", "identifiableAttributes", "eventTime"} <= set(
            event
        )
    # Every type of the current edition occurs in a valid event.
    valid_types = {e["signalType"] for e, b in zip(lines, bad, strict=True) if not b}
    assert valid_types == set(catalog.SIGNALS)

    result, verdicts = run(["--app-key", "default-app", str(EXAMPLES)])
    assert result.exit_code == 1
    assert len(verdicts) == len(lines)
    assert [not v["ok"] for v in verdicts] == bad
    assert {v["reason"] for v in verdicts if not v["ok"]} == {"validation"}
    assert f"{sum(bad)} line(s) rejected" in result.stderr
    by_id = {e["eventId"]: v for e, v in zip(lines, verdicts, strict=True)}
    assert by_id["bad-currency"]["field"] == "currency"
    assert by_id["bad-missing-required"]["message"] == "searchTerm: required"
    assert by_id["bad-long-name"]["field"] == "name"
    assert by_id["bad-no-identity"]["field"] == "identifiableAttributes"
    assert by_id["bad-item-without-price"]["message"] == "orderedItems[1].unitPrice: required"
    # The order with a repeated product is merged; the earlier-edition order is upgraded.
    merged = by_id["a-0011"]["signal"]["signalContent"]["orderedItems"]
    assert [(i["productId"], i["itemQuantity"]) for i in merged] == [
        ("AC-PNT-WHT-SM", 2),
        ("AC-DBL-BRSH-6", 1),
    ]
    upgraded = by_id["d-0006"]["signal"]["signalContent"]["orderedItems"]
    assert [i["itemQuantity"] for i in upgraded] == [2, 1]
    assert by_id["d-0004"]["signal"]["signalContent"]["errorType"] == "USER"
    assert by_id["b-0002"]["signal"]["signalContent"]["effect"] == "negative"
