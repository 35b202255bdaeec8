"""Tracing: one OpenTelemetry setup per process, and the W3C trace context carried across calls.

Every service's config has a ``telemetry`` section; the replica sets the tracer provider up once
(``setup_tracing``) when it starts. Spans are made in one place, the gRPC ingress wrapper
(``serving.py``): a server span per RPC, continuing the caller's ``traceparent`` from gRPC
metadata or, between services, from the carrier a ``HandleClient`` sends along with the request.
Service code only adds attributes to the current span.

Ray Serve has tracing of its own (``RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH``): it is configured
by environment variables for every Ray process, samples 1% by default and names spans after
Serve's internals. ragtune keeps its tracing in its own config instead, so endpoint, sampling and
service names live in the one deployment YAML like everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_configured: tuple | None = None  # the config this process was set up with


class TelemetryConfig(BaseModel):
    tracing: Literal["off", "console", "otlp"] = Field(
        default="off", description="Where spans go: nowhere, stdout, or an OTLP/gRPC collector."
    )
    otlp_endpoint: str = Field(
        default="localhost:4317", description="OTLP/gRPC collector address (host:port)."
    )
    otlp_insecure: bool = Field(default=True, description="Plaintext gRPC to the collector.")
    sampling_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded; a caller's sampled traceparent is always "
        "followed (parent-based sampling).",
    )
    service_prefix: str = Field(
        default="ragtune-", description="service.name is this prefix plus the service's name."
    )
    export_delay_ms: int = Field(default=2000, ge=50, description="Batch export interval.")
    capture_content: bool = Field(
        default=False, description="Put prompt and answer text on spans (off: they may be private)."
    )
    tenant_attribute: bool = Field(
        default=False, description="Put the tenant name on gateway spans (ragtune.tenant)."
    )


def setup_tracing(config: TelemetryConfig, service: str) -> None:
    """Install this process's tracer provider (once; later calls with the same config are
    no-ops, a different config is logged and ignored: the provider is process-global)."""
    global _configured
    key = (config.model_dump_json(), service)
    if _configured is not None:
        if _configured != key:
            log.warning("tracing already set up for %s; ignoring a second config", _configured[1])
        return
    _configured = key
    if config.tracing == "off":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if config.tracing == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint, insecure=config.otlp_insecure)
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": config.service_prefix + service, "service.namespace": "ragtune"}
        ),
        sampler=ParentBased(TraceIdRatioBased(config.sampling_ratio)),
    )
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=config.export_delay_ms)
    )
    trace.set_tracer_provider(provider)


def tracer() -> trace.Tracer:
    return trace.get_tracer("ragtune")


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers, to send along with a call."""
    headers: dict[str, str] = {}
    _PROPAGATOR.inject(headers)
    return headers


def parent_context(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """The caller's context from ``traceparent``/``tracestate`` headers (None: start a trace)."""
    if not headers or "traceparent" not in headers:
        return None
    return _PROPAGATOR.extract(dict(headers))


def annotate(attributes: Mapping[str, object]) -> None:
    """Add attributes to the current span (the RPC's server span), skipping empty values."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v not in (None, "")})
