"""Trace export and sampling follow the standard OTEL_* variables; nothing is exported when none is set."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from tollgate_core.telemetry import (
    TracingConfigError,
    otlp_exporter_from_env,
    sampler_from_env,
    setup_tracing,
)

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


def processors(provider: TracerProvider) -> list[object]:
    return list(provider._active_span_processor._span_processors)


def test_nothing_is_exported_without_an_endpoint() -> None:
    assert otlp_exporter_from_env({}) is None
    assert processors(setup_tracing("ingest")) == []


@pytest.mark.parametrize(
    "env",
    [
        {**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"},
        {**ENDPOINT, "OTEL_SDK_DISABLED": "true"},
        {**ENDPOINT, "OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_export_can_be_switched_off(env: dict[str, str]) -> None:
    assert otlp_exporter_from_env(env) is None


def test_an_endpoint_gives_otlp_http_export_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(otlp_exporter_from_env(ENDPOINT), OTLPSpanExporter)
    assert isinstance(
        otlp_exporter_from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}),
        OTLPSpanExporter,
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    provider = setup_tracing("scorer")
    try:
        (processor,) = processors(provider)
        # Ending a span only queues it: a background thread exports, never the request's own.
        assert isinstance(processor, BatchSpanProcessor)
        assert isinstance(processor._batch_processor._exporter, OTLPSpanExporter)
    finally:
        provider.shutdown()


def test_grpc_is_refused_with_a_clear_message() -> None:
    with pytest.raises(TracingConfigError, match="http/protobuf"):
        otlp_exporter_from_env({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_sampling_ratio_from_the_standard_variable_or_the_service_setting() -> None:
    own = sampler_from_env(0.25, {})
    assert isinstance(own, ParentBased) and "0.25" in own.get_description()
    from_env = sampler_from_env(0.25, {"OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert from_env is not None and "0.5" in from_env.get_description()
    # A named sampler is built by the SDK itself from OTEL_TRACES_SAMPLER(_ARG).
    assert sampler_from_env(0.25, {"OTEL_TRACES_SAMPLER": "always_off"}) is None
    with pytest.raises(TracingConfigError, match="not a number"):
        sampler_from_env(0.25, {"OTEL_TRACES_SAMPLER_ARG": "half"})
    with pytest.raises(TracingConfigError, match="outside"):
        sampler_from_env(2.0, {})


def test_the_sdk_honours_a_named_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert setup_tracing("validator").sampler is ALWAYS_OFF
