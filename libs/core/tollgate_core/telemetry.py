"""OpenTelemetry set-up and W3C ``traceparent`` propagation through Kafka headers.

Export follows the standard OpenTelemetry environment variables and nothing else:

* ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: finished spans go to that
  collector over OTLP/HTTP (protobuf, the official ``opentelemetry-exporter-otlp-proto-http``) through a
  ``BatchSpanProcessor``: ending a span only appends it to a bounded queue, a background thread exports in
  batches (``OTEL_BSP_*`` tune it), so a slow or absent collector never slows a request. Headers, timeout,
  compression and certificates come from the exporter's own ``OTEL_EXPORTER_OTLP_*`` variables.
* neither set, or ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``: nothing is exported.
* sampling: ``OTEL_TRACES_SAMPLER`` (+ ``OTEL_TRACES_SAMPLER_ARG``) as the SDK defines them; else
  ``OTEL_TRACES_SAMPLER_ARG`` alone is the ratio of a parent-based trace-id-ratio sampler; else the
  service's own ``trace_sample_ratio`` setting. Parent-based: a trace sampled upstream stays sampled.

Hot stream stages handle tens of thousands of events a second, so spans are only made for sampled traces
(the ``traceparent`` flags say so); an unsampled event keeps its incoming ``traceparent`` header unchanged,
which still ties every hop of it to one trace id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
_propagator = TraceContextTextMapPropagator()

Headers = Sequence[tuple[str, bytes]]


class TracingConfigError(ValueError):
    """An OTEL_* variable has a value this platform cannot honour; the message names it."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def sampler_from_env(sample_ratio: float, env: Mapping[str, str] | None = None) -> Sampler | None:
    """The sampler the OTEL_* variables ask for, else a parent-based ``sample_ratio`` one. ``None`` means
    ``OTEL_TRACES_SAMPLER`` is set and the SDK builds that sampler itself (with ``OTEL_TRACES_SAMPLER_ARG``)."""
    env = os.environ if env is None else env
    if env.get("OTEL_TRACES_SAMPLER"):
        return None
    ratio = sample_ratio
    arg = env.get("OTEL_TRACES_SAMPLER_ARG")
    if arg:
        try:
            ratio = float(arg)
        except ValueError:
            raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a number") from None
    if not 0.0 <= ratio <= 1.0:
        raise TracingConfigError(f"trace sampling ratio {ratio} is outside 0..1")
    return ParentBased(TraceIdRatioBased(ratio))


def otlp_exporter_from_env(env: Mapping[str, str] | None = None) -> SpanExporter | None:
    """The OTLP/HTTP span exporter the OTEL_* variables configure, or ``None`` when none is asked for."""
    env = os.environ if env is None else env
    if _flag(env, "OTEL_SDK_DISABLED"):
        return None
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()}
    if "none" in exporters or "otlp" not in exporters:
        return None
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise TracingConfigError(
            f"OTLP protocol {protocol!r} is not supported: tollgate exports traces over http/protobuf "
            "(set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and the collector's port 4318)"
        )
    # Imported here: a process that exports nothing never loads the exporter (and requests, protobuf).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: read from the same variables


def setup_tracing(
    service: str,
    *,
    sample_ratio: float = 0.01,
    console: bool = False,
    processors: Sequence[SpanProcessor] = (),
) -> TracerProvider:
    """Build the service's tracer provider: sampler and OTLP export from the OTEL_* variables (see the
    module docstring), ``processors`` and the console exporter added as asked. The provider flushes its
    batch queue at interpreter exit (the SDK registers that), so spans of a stopping service are sent."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"tollgate-{service}", "service.namespace": "tollgate"}),
        sampler=sampler_from_env(sample_ratio),
    )
    for processor in processors:
        provider.add_span_processor(processor)
    exporter = otlp_exporter_from_env()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if console or "console" in os.environ.get("OTEL_TRACES_EXPORTER", "").lower():
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


@contextmanager
def server_span(
    tracer: trace.Tracer,
    name: str,
    traceparent: str | bytes | None,
    attributes: dict[str, str | int] | None = None,
) -> Iterator[tuple[Span, bytes]]:
    """A span for one HTTP request, child of the caller's W3C ``traceparent`` when it sent one, else the
    root of a new trace (sampled at the service's ratio); yields it with the ``traceparent`` its outputs
    carry. An unsampled span still yields a ``traceparent`` (flags ``00``), so the trace id travels on."""
    context = None
    if traceparent:
        raw = traceparent.decode("ascii", "replace") if isinstance(traceparent, bytes) else traceparent
        context = _propagator.extract({TRACEPARENT: raw})
    with tracer.start_as_current_span(
        name, context=context, kind=trace.SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span, traceparent_of(span)


def record_consumed_span(
    tracer: trace.Tracer,
    name: str,
    headers: Headers | None,
    start_time_ns: int,
    attributes: dict[str, str | int] | None = None,
) -> None:
    """Record a finished span (begun at ``start_time_ns``) for a consumed message whose trace is sampled;
    nothing for others. For sinks that learn only after a batch write which records it covered."""
    if not is_sampled(header_value(headers, TRACEPARENT)):
        return
    span = tracer.start_span(
        name,
        context=context_from_headers(headers),
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        start_time=start_time_ns,
    )
    span.end()
