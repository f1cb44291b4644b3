"""OpenTelemetry traces: a span per createSignals call and per dead letter (optional).

Off by default. On with ``PIPELINE_TRACING=true`` and the ``otel`` extra installed
(``pip install connect-signals-pipeline[otel]``); the exporter is OTLP over HTTP,
configured by the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``...).

Without the extra, or switched off, every function here is a no-op that costs a
function call: the consumer calls them unconditionally.

A producer's ``traceparent`` header (W3C trace context) is continued: a dead letter's
span is a child of its record's producer span; a batch call, which carries many
records, links to each record's context (OpenTelemetry's rule for batch processing)
up to ``MAX_LINKS``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol

from pipeline import __version__

#: Links of one batch span at most (a batch of 500 records would make a huge span).
MAX_LINKS: Final = 128
TRACER_NAME: Final = "connect-signals-pipeline"

#: A record's headers as confluent-kafka gives them (a list of pairs; a dict is allowed)
Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]


class SpanLike(Protocol):
    def set_attribute(self, key: str, value: Any) -> Any: ...


class _NoSpan:
    """What the call sites get while tracing is off."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass


_NO_SPAN: Final = _NoSpan()
_tracer: Any = None  # an opentelemetry Tracer once configure() enabled tracing
_provider: Any = None


def enabled() -> bool:
    return _tracer is not None


def configure(enable: bool) -> bool:
    """Install the OTLP exporter when ``enable`` and the extra is installed; True if on.

    Raises ImportError naming the extra when asked for tracing without it: a setting
    that silently does nothing would be worse.
    """
    global _tracer, _provider
    if not enable:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise ImportError(
            "PIPELINE_TRACING=true needs the 'otel' extra: "
            "pip install 'connect-signals-pipeline[otel]'"
        ) from error
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over these defaults
    defaults = Resource({SERVICE_NAME: "connect-signals-pipeline", SERVICE_VERSION: __version__})
    provider = TracerProvider(resource=defaults.merge(Resource.create()))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME, __version__)
    return True


def shutdown() -> None:
    """Export what is buffered (at exit; the batch processor exports every few seconds)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def _carrier(headers: Headers | None) -> dict[str, str]:
    found: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for key, value in pairs:
        if key in ("traceparent", "tracestate") and value is not None:
            found[key] = value.decode(errors="replace") if isinstance(value, bytes) else value
    return found


def _context(headers: Headers | None) -> Any:
    """The producer's trace context from a record's headers (None: there is none)."""
    carrier = _carrier(headers)
    if "traceparent" not in carrier:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier)


@contextlib.contextmanager
def batch_call(
    signals: int, body_bytes: int, records_headers: Iterable[Headers | None] = ()
) -> Iterator[SpanLike]:
    """One createSignals attempt (a CLIENT span), linked to its records' producers.
    Set ``outcome`` on the span (``set_outcome``) when the answer is classified."""
    if _tracer is None:
        yield _NO_SPAN
        return
    from opentelemetry.trace import Link, SpanKind, get_current_span

    links = []
    for headers in records_headers:
        context = _context(headers)
        if context is not None:
            links.append(Link(get_current_span(context).get_span_context()))
            if len(links) >= MAX_LINKS:
                break
    attributes = {"connect.signals.count": signals, "http.request.body.size": body_bytes}
    with _tracer.start_as_current_span(
        "createSignals", kind=SpanKind.CLIENT, links=links, attributes=attributes
    ) as span:
        yield span


def set_outcome(span: SpanLike, outcome: str, accepted: int | None = None) -> None:
    """The call's classified outcome (ok, partial, rejected, retryable, timeout...)."""
    span.set_attribute("connect.signals.outcome", outcome)
    if accepted is not None:
        span.set_attribute("connect.signals.accepted", accepted)
    if _tracer is not None and outcome not in ("ok", "partial"):
        from opentelemetry.trace import Status, StatusCode

        if hasattr(span, "set_status"):
            span.set_status(Status(StatusCode.ERROR, outcome))


def dead_letter(
    reason: str,
    field: str,
    topic: str,
    partition: int,
    offset: int,
    headers: Headers | None,
) -> None:
    """One dead letter: a span in the trace its record's producer started, if any."""
    if _tracer is None:
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    attributes = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "connect.signals.reason": reason,
        "connect.signals.field": field,
    }
    span = _tracer.start_span(
        "dead-letter", context=_context(headers), kind=SpanKind.CONSUMER, attributes=attributes
    )
    span.set_status(Status(StatusCode.ERROR, reason))
    span.end()
