"""Logging: structlog, one JSON object per line in production, readable in a terminal.

Every log line, ours and the libraries' (httpx, librdkafka through the stdlib logger),
goes to one stream (stderr). The last step of both paths removes every configured
secret (API key, the auth header value, appKey, SASL password, Schema Registry
credentials, passwords inside the URLs, secret-looking PIPELINE_KAFKA_CONFIG values)
from the rendered line, whatever field or exception text it hid in. An exception
nobody caught is logged the same way (not printed raw by the interpreter).

In JSON mode our own lines skip the stdlib ``logging`` machinery: structlog renders
them with orjson and writes them itself (about 8 µs a line instead of about 50, and
the consumer logs one line per dead letter). Libraries' lines still go through a
stdlib handler with the same fields.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable
from dataclasses import replace
from types import TracebackType
from typing import Any, Final, TextIO

import orjson
import structlog
from pydantic import SecretStr

from pipeline.config import LogFormat, Settings, is_secret_property, url_credentials
from pipeline.signals.outcomes import Problem, Rejection

MASK: Final = "**********"


class Redactor:
    """Replaces known secret strings by a mask. Thread-safe, process-wide."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            known = set(self._secrets)
            for secret in secrets:
                if secret:
                    known.add(secret)
                    # the same secret as it appears inside a JSON string (both escapings)
                    known.add(json.dumps(secret)[1:-1])
                    known.add(json.dumps(secret, ensure_ascii=False)[1:-1])
            # longest first: "Bearer key" is masked whole, not around "key"
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    @property
    def active(self) -> bool:
        return bool(self._secrets)


#: The process's redactor: logs and dead-letter messages pass through it.
redact = Redactor()


def redacted(rejection: Rejection) -> Rejection:
    """The rejection with every known secret masked in its messages.

    Rejection messages quote offending values (and Connect's own messages may quote
    what it received): they go to dead-letter headers, which outlive any log.
    """
    if not redact.active:
        return rejection
    problems = tuple(Problem(p.field, redact(p.rule)) for p in rejection.problems)
    return replace(rejection, problems=problems)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value a setting holds, and the forms it travels in."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
    if settings.connect_api_key is not None:
        key = settings.connect_api_key.get_secret_value()
        values.append(f"{settings.connect_auth_scheme} {key}".strip())
    if settings.schema_registry_basic_auth is not None:
        user_info = settings.schema_registry_basic_auth.get_secret_value()
        values.append(user_info.partition(":")[2])  # the password alone
    for key, value in settings.kafka_config.items():
        if is_secret_property(key):
            values.append(value)
    values += url_credentials(settings.connect_url)
    values += url_credentials(settings.schema_registry_url)
    return [v for v in values if v]


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    structlog.get_logger("pipeline").critical("uncaught exception", exc_info=error)


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        structlog.get_logger("pipeline").critical(
            "uncaught exception in a thread",
            thread=getattr(args.thread, "name", None),
            exc_info=args.exc_value,
        )


def _redact_rendered(_: Any, __: str, rendered: Any) -> Any:
    return redact(rendered) if isinstance(rendered, str) else rendered


class _NamedWriteLogger(structlog.WriteLogger):
    """A structlog ``WriteLogger`` with a ``name``, for ``add_logger_name``."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _render_json(_: Any, __: str, event_dict: Any) -> str:
    # default=repr: a value orjson does not know still gives a line, never an error
    return redact(orjson.dumps(event_dict, default=repr).decode())


def _use_console(settings: Settings, stream: TextIO) -> bool:
    if "log_format" in settings.model_fields_set:
        return settings.log_format is LogFormat.CONSOLE
    # not chosen explicitly: JSON for machines, readable text for a person at a terminal
    return stream.isatty()


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr), secrets removed."""
    out = stream or sys.stderr
    redact.add(secrets_of(settings))
    level = logging.getLevelName(settings.log_level)  # validated: one of LOG_LEVELS
    console = _use_console(settings, out)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if not console:
        final.append(structlog.processors.dict_tracebacks)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[*final, renderer, _redact_rendered],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO: a line per createSignals call is noise at INFO
    logging.getLogger("httpx").setLevel(
        logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    )
    if console:  # for a person: through the stdlib handler, like the libraries' lines
        processors = [*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter]
        factory: Any = structlog.stdlib.LoggerFactory()
    else:  # for machines, and fast: rendered and written by structlog itself
        processors = [*shared, structlog.processors.dict_tracebacks, _render_json]

        def factory(*args: Any) -> _NamedWriteLogger:
            return _NamedWriteLogger(out, str(args[0]) if args else "")

    structlog.configure(
        processors=processors,
        logger_factory=factory,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,
    )
    # a traceback printed by the interpreter would skip the redaction (URLs in messages)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
