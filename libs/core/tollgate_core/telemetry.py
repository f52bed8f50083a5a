"""OpenTelemetry set-up and W3C ``traceparent`` propagation through Kafka headers.

Hot stream stages handle tens of thousands of events a second, so spans are only made for sampled traces
(the ``traceparent`` flags say so); an unsampled event keeps its incoming ``traceparent`` header unchanged,
which still ties every hop of it to one trace id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
_propagator = TraceContextTextMapPropagator()

Headers = Sequence[tuple[str, bytes]]


def setup_tracing(
    service: str,
    *,
    sample_ratio: float = 0.01,
    console: bool = False,
    processors: Sequence[SpanProcessor] = (),
) -> TracerProvider:
    """Build the service's tracer provider (parent-based sampling, so a sampled trace stays sampled)."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"tollgate-{service}", "service.namespace": "tollgate"}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    for processor in processors:
        provider.add_span_processor(processor)
    if console:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def header_value(headers: Headers | None, name: str) -> bytes | None:
    if headers:
        for key, value in headers:
            if key == name:
                return value
    return None


def context_from_headers(headers: Headers | None) -> Context | None:
    raw = header_value(headers, TRACEPARENT)
    if raw is None:
        return None
    return _propagator.extract({TRACEPARENT: raw.decode("ascii", "replace")})


def is_sampled(traceparent: bytes | None) -> bool:
    # traceparent = version "-" trace-id "-" parent-id "-" flags ; flags bit 0 = sampled
    return traceparent is not None and len(traceparent) >= 55 and traceparent[-1:] in b"13579bdf"


def traceparent_of(span: Span) -> bytes:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier[TRACEPARENT].encode("ascii")


def trace_id_of(traceparent: bytes | None) -> str | None:
    if traceparent is None or len(traceparent) < 35:
        return None
    return traceparent[3:35].decode("ascii", "replace")


@contextmanager
def consumer_span(
    tracer: trace.Tracer, name: str, headers: Headers | None, attributes: dict[str, str | int] | None = None
) -> Iterator[tuple[Span | None, bytes | None]]:
    """Yield ``(span, traceparent_for_output)``; no span is made for unsampled or untraced messages."""
    incoming = header_value(headers, TRACEPARENT)
    if not is_sampled(incoming):
        yield None, incoming
        return
    with tracer.start_as_current_span(
        name, context=context_from_headers(headers), kind=trace.SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span, traceparent_of(span)


def forward_traceparent(
    tracer: trace.Tracer, name: str, headers: Headers | None, attributes: dict[str, str | int] | None = None
) -> bytes | None:
    """The ``traceparent`` an output of this message carries: the incoming one when unsampled (no span work on
    the hot path), else that of a span recorded for this hop."""
    incoming = header_value(headers, TRACEPARENT)
    if not is_sampled(incoming):
        return incoming
    with consumer_span(tracer, name, headers, attributes) as (_, traceparent):
        return traceparent


def new_trace_headers(tracer: trace.Tracer, name: str) -> tuple[Span, bytes]:
    """Start a producer span that begins a new trace (e.g. an event entering over HTTP); caller ends it."""
    span = tracer.start_span(name, kind=trace.SpanKind.PRODUCER)
    return span, traceparent_of(span)
