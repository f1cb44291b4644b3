"""Log setup: JSON lines or console text, and secrets masked wherever they hide."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading

import pytest
import structlog

from pipeline.config import Settings
from pipeline.ops.logs import MASK, Redactor, configure_logging, redact, redacted, secrets_of
from pipeline.signals.outcomes import Reason, Rejection

SECRETS = {
    "connect_api_key": "api-KEY-7f3a9",
    "default_app_key": "app-KEY-c41d2",
    "kafka_sasl_password": 'sasl"pw\\x91',
    "schema_registry_basic_auth": "reg-user:reg-PW-55e1",
}


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    root.handlers, root.level = handlers, level
    sys.excepthook, threading.excepthook = hooks
    structlog.reset_defaults()


def _settings(**extra) -> Settings:
    # the Authorization: Bearer form (X-API-Key, the default, sends the bare key): the
    # derived "Bearer <key>" is a secret too
    return Settings(
        topics=["t"],
        connect_auth_header="Authorization",
        connect_auth_scheme="Bearer",
        kafka_config={"ssl.key.password": "ssl-PW-0a0b"},
        **SECRETS,
        **extra,
    )


def test_json_lines_carry_fields_and_mask_every_secret(restore_logging):
    out = io.StringIO()
    configure_logging(_settings(), out)
    log = structlog.get_logger("pipeline.test")
    log.info(
        "dead-lettered", topic="t", partition=1, offset=7, detail={"auth": "Bearer api-KEY-7f3a9"}
    )
    try:
        raise RuntimeError("registry said no to reg-user:reg-PW-55e1 and ssl-PW-0a0b")
    except RuntimeError:
        log.exception("failed")
    logging.getLogger("librdkafka").warning('sasl.password=sasl"pw\\x91 app=app-KEY-c41d2')
    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["event"] == "dead-lettered"
    assert lines[0]["partition"] == 1 and lines[0]["logger"] == "pipeline.test"
    assert lines[0]["detail"]["auth"] == MASK  # "Bearer <key>" masked whole
    assert lines[2]["logger"] == "librdkafka" and lines[2]["level"] == "warning"
    for secret in [*SECRETS.values(), "reg-PW-55e1", "ssl-PW-0a0b", "api-KEY-7f3a9"]:
        assert secret not in text
        assert json.dumps(secret)[1:-1] not in text  # nor its JSON-escaped form


def test_console_when_asked_and_json_when_not_a_terminal(restore_logging):
    out = io.StringIO()
    configure_logging(_settings(log_format="console"), out)
    structlog.get_logger("x").info("hello", key="api-KEY-7f3a9")
    assert not out.getvalue().startswith("{") and "hello" in out.getvalue()
    assert "api-KEY-7f3a9" not in out.getvalue()
    out = io.StringIO()
    configure_logging(_settings(), out)  # not chosen, not a terminal: JSON
    structlog.get_logger("x").info("hello")
    assert json.loads(out.getvalue())["event"] == "hello"


def test_debug_lines_only_at_debug_level(restore_logging):
    out = io.StringIO()
    configure_logging(_settings(log_level="WARNING"), out)
    structlog.get_logger("x").info("quiet")
    structlog.get_logger("x").warning("loud")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]


def test_secrets_of_settings_include_derived_forms():
    found = set(secrets_of(_settings()))
    assert {"api-KEY-7f3a9", "Bearer api-KEY-7f3a9", "reg-PW-55e1", "ssl-PW-0a0b"} <= found


def test_rejection_messages_are_masked_for_dead_letter_headers():
    redact.add(["app-KEY-c41d2"])
    rejection = Rejection.single(Reason.VALIDATION, "currency", "'app-KEY-c41d2' is not ISO 4217")
    masked = redacted(rejection)
    assert masked.message == f"currency: '{MASK}' is not ISO 4217"
    assert masked.field == "currency" and masked.reason is Reason.VALIDATION


def test_redactor_prefers_the_longest_secret():
    r = Redactor()
    r.add(["abc", "xxabcxx", ""])
    assert r("1 xxabcxx 2 abc") == f"1 {MASK} 2 {MASK}"
    assert Redactor()("untouched") == "untouched"


def test_httpx_request_lines_only_at_debug(restore_logging):
    out = io.StringIO()
    configure_logging(_settings(), out)
    logging.getLogger("httpx").info('HTTP Request: POST http://c/graphql "HTTP/1.1 200 OK"')
    logging.getLogger("httpx").warning("pool exhausted")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["pool exhausted"]
    out = io.StringIO()
    configure_logging(_settings(log_level="DEBUG"), out)
    logging.getLogger("httpx").info("HTTP Request: POST")
    assert json.loads(out.getvalue())["event"] == "HTTP Request: POST"


def test_a_value_json_cannot_hold_still_gives_a_line(restore_logging):
    out = io.StringIO()
    configure_logging(_settings(), out)
    structlog.get_logger("x").info("odd", value=object(), keys={1, 2}, text="é ünï")
    line = json.loads(out.getvalue())
    assert line["event"] == "odd" and line["value"].startswith("<object object")
    assert line["text"] == "é ünï" and line["level"] == "info"


def test_non_ascii_secret_is_masked_in_json_lines(restore_logging):
    out = io.StringIO()
    configure_logging(Settings(topics=["t"], connect_api_key="clé-secrète-9"), out)
    structlog.get_logger("x").info("sent", header="Bearer clé-secrète-9", raw="clé-secrète-9")
    assert "secrète" not in out.getvalue() and "secr\\u00e8te" not in out.getvalue()


def test_credentials_inside_urls_and_kafka_config_are_masked_in_lines(restore_logging):
    out = io.StringIO()
    settings = Settings(
        topics=["t"],
        connect_url="https://svc:Conn%2FPw-81@connect.example/graphql",
        schema_registry_url="https://RegTok-82@registry.example",
        kafka_config={"sasl.oauthbearer.client.secret": "OidcPw-83", "linger.ms": "5"},
    )
    configure_logging(settings, out)
    log = structlog.get_logger("x")
    log.warning("call failed", url=settings.connect_url, registry=settings.schema_registry_url)
    logging.getLogger("librdkafka").error("token request with OidcPw-83 refused")
    log.warning("decoded form", password="Conn/Pw-81")
    text = out.getvalue()
    for secret in ("Conn%2FPw-81", "Conn/Pw-81", "RegTok-82", "OidcPw-83"):
        assert secret not in text
    first = json.loads(text.splitlines()[0])
    assert first["url"] == f"https://svc:{MASK}@connect.example/graphql"
    assert first["registry"] == f"https://{MASK}@registry.example"


def test_an_uncaught_exception_is_logged_masked_not_printed_raw(tmp_path):
    """The interpreter's own traceback would print a URL with its password verbatim."""
    script = (
        "from pipeline.config import Settings\n"
        "from pipeline.ops.logs import configure_logging\n"
        "s = Settings(topics=['t'], connect_url='https://u:UncaughtPw-91@c.example/graphql')\n"
        "configure_logging(s)\n"
        "raise ConnectionError('cannot reach ' + s.connect_url)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "UncaughtPw-91" not in done.stderr + done.stdout
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert line["event"] == "uncaught exception" and line["level"] == "critical"
    assert "ConnectionError" in json.dumps(line["exception"])
