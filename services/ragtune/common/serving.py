"""Turn a plain service class into a Ray Serve deployment with a gRPC ingress.

The service classes know nothing of Ray: their methods are the RPCs, named as in the proto,
``async def Rpc(self, request[, context])``. This module wraps them once, generically, so that
errors are mapped to status codes, every RPC gets its server span (continuing the caller's
trace) and its request/latency metrics in one place, not pasted into every service.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf import symbol_database
from google.protobuf.descriptor import ServiceDescriptor
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ragtune.common.context import CallContext
from ragtune.common.errors import (
    InvalidArgument,
    Overloaded,
    PermissionDenied,
    outcome,
    to_status,
    unwrap,
)
from ragtune.common.servicers import MalformedRequest
from ragtune.common.services import SERVICES, ServiceSpec
from ragtune.common.telemetry import TelemetryConfig, parent_context, setup_tracing, tracer

log = logging.getLogger(__name__)

GAUGE_INTERVAL_S = 1.0  # at most Ray's metrics report interval (RAY_metrics_report_interval_ms)

# Seconds; they include the SLO thresholds of docs/observability.md (0.5, 2.5, 5 and 10 s).
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


@contextmanager
def report_errors(grpc_context: Any | None) -> Iterator[None]:
    """Put an escaping error's mapped status on the gRPC context, so Serve's proxy sends it
    instead of INTERNAL, then let it propagate."""
    try:
        yield
    except Exception as exc:
        if grpc_context is not None:
            code, details = to_status(exc)
            grpc_context.set_code(code)
            grpc_context.set_details(details)
            retry_ms = retry_after_ms(exc)
            if retry_ms is not None:
                grpc_context.set_trailing_metadata([(RETRY_AFTER, str(retry_ms))])
        raise


# Trailing metadata of a RESOURCE_EXHAUSTED refusal: when to try again, in milliseconds.
RETRY_AFTER = "retry-after-ms"
QUEUE_FULL_RETRY_MS = 1000  # a full queue drains within about a second of serving


def retry_after_ms(exc: BaseException) -> int | None:
    """When the caller may retry: a quota's own reset time, or a short pause for a full
    queue (Serve's BackPressureError); None for errors a retry will not fix."""
    exc = unwrap(exc)
    seconds = getattr(exc, "retry_after_s", None)
    if seconds is not None:
        return max(1, int(seconds * 1000))
    if type(exc).__name__ == "BackPressureError":
        return QUEUE_FULL_RETRY_MS
    return None


class RpcTelemetry:
    """Server span and metrics of every RPC of one service."""

    def __init__(self, service: str, package: str) -> None:
        from ray.serve import metrics

        self.service, self.package = service, package
        self.requests = metrics.Counter(
            "ragtune_rpc_requests_total",
            description="RPCs handled, by service, RPC, gRPC status code and outcome (ok, "
            "client_error: refused, cancelled: the caller went away or its deadline passed, "
            "server_error: ragtune failed it; only server_error counts against the SLOs).",
            tag_keys=("service", "rpc", "code", "outcome"),
        )
        self.latency = metrics.Histogram(
            "ragtune_rpc_latency_seconds",
            description="Time to handle an RPC (a stream: until its last message).",
            boundaries=LATENCY_BUCKETS,
            tag_keys=("service", "rpc"),
        )

    def start(self, rpc: str, headers: Mapping[str, str] | None) -> trace.Span:
        return tracer().start_span(
            f"{self.package}/{rpc}",
            context=parent_context(headers),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": self.package, "rpc.method": rpc},
        )

    @contextmanager
    def observe(self, rpc: str, headers: Mapping[str, str] | None) -> Iterator[trace.Span]:
        """The RPC's server span, ended with its status and counted when the block exits (a
        stream's consumer going away arrives here as GeneratorExit: CANCELLED)."""
        span, started, error = self.start(rpc, headers), time.perf_counter(), None
        try:
            yield span
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.finish(rpc, span, started, error)

    def finish(self, rpc: str, span: trace.Span, started: float, exc: BaseException | None):
        # A caller that goes away (a stream's consumer leaving: GeneratorExit; a cancelled or
        # timed-out call: CancelledError) ends the call as CANCELLED, counted as the caller's
        # doing, not as a server error.
        if isinstance(exc, StopAsyncIteration):
            exc = GeneratorExit()
        code, ended = grpc.StatusCode.OK, outcome(exc)
        if exc is not None:
            code, details = to_status(exc)
            if ended != "cancelled":
                span.set_status(Status(StatusCode.ERROR, details))
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        span.end()
        tags = {"service": self.service, "rpc": rpc}
        self.requests.inc(tags={**tags, "code": code.name, "outcome": ended})
        self.latency.observe(time.perf_counter() - started, tags=tags)


def _headers(grpc_context: Any, trace_headers: Mapping[str, str] | None) -> Mapping[str, str]:
    """Trace context from a handle call's carrier, else from the gRPC metadata."""
    if trace_headers is not None:
        return trace_headers
    return CallContext.from_grpc(grpc_context).metadata


@contextmanager
def continue_trace(grpc_context: Any, trace_headers: Mapping[str, str] | None) -> Iterator[None]:
    """Make the caller's trace context current for work done before an RPC's own span starts
    (Serve's multiplexing hook): its spans join the caller's trace."""
    parent = parent_context(_headers(grpc_context, trace_headers))
    token = otel_context.attach(parent) if parent is not None else None
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)


def _call_context(grpc_context: Any, metadata: Mapping[str, str] | None) -> CallContext:
    """The caller as the service sees it: from the gRPC metadata, or, for a handle call (no
    gRPC context), from the metadata the calling deployment passed on for its own caller."""
    if grpc_context is None and metadata is not None:
        return CallContext.from_metadata(metadata)
    return CallContext.from_grpc(grpc_context)


def _invoke(
    service: Any,
    name: str,
    request: Any,
    grpc_context: Any,
    takes_context: bool,
    metadata: Mapping[str, str] | None,
) -> Any:
    method = getattr(service, name)
    if takes_context:
        return method(request, _call_context(grpc_context, metadata))
    return method(request)


# Both wrappers take, besides the gRPC context Serve's proxy passes, two keywords only handle
# callers pass: ``_trace`` (the caller's trace context as W3C headers) and ``_metadata`` (the
# metadata of the caller's own client, e.g. an HTTP ingress passing its caller's
# ``authorization``: the service authenticates it as if it had come over gRPC). Only code
# inside the Ray cluster holds handles, and the service checks the key either way.


# The platform's internal credential: a secret shared by the deployments (an environment
# variable of every replica; on Kubernetes from a Secret). An internal service refuses a call
# that arrives over gRPC — through the public port — unless it carries this value in the
# INTERNAL_TOKEN_HEADER metadata; handle calls (from inside the Ray cluster) need none. Unset,
# nothing arriving over gRPC reaches an internal service. Tests and single-service benchmarks
# set it to call a service directly.
INTERNAL_TOKEN_ENV = "RAGTUNE_INTERNAL_TOKEN"
INTERNAL_TOKEN_HEADER = "ragtune-internal-token"


def check_network_caller(public: bool, grpc_context: Any) -> None:
    """Refuse a network call to an internal service without the internal credential."""
    if public or grpc_context is None:
        return
    expected = os.environ.get(INTERNAL_TOKEN_ENV, "")
    given = CallContext.from_grpc(grpc_context).get(INTERNAL_TOKEN_HEADER)
    if not (expected and given and hmac.compare_digest(expected.encode(), given.encode())):
        raise PermissionDenied(
            "this is an internal service of ragtune: clients call ragtune.v1.Gateway "
            "(metadata application: gateway)"
        )


def _refuse_malformed(request: Any) -> None:
    """Bytes that were no valid message (``ragtune.common.servicers``): the caller's error."""
    if isinstance(request, MalformedRequest):
        raise InvalidArgument(f"not a valid {request.message_type} message", field="request")


class Admission:
    """At most ``limit`` RPCs in flight on this replica (None: no limit of ragtune's own, only
    Serve's queue). One over is refused at once with RESOURCE_EXHAUSTED and a retry hint, so
    that a burst is told to come back instead of queueing until its deadline passes
    (docs/security.md#quotas-rate-limits-and-backpressure). Counted on the replica's event
    loop: no lock."""

    def __init__(self, limit: int | None) -> None:
        self.limit, self.in_flight = limit, 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        if self.limit is not None and self.in_flight >= self.limit:
            raise Overloaded(
                f"server busy: {self.in_flight} requests in flight on this replica, its "
                f"max_in_flight is {self.limit}; retry later",
                retry_after_s=QUEUE_FULL_RETRY_MS / 1000,
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


def _carries_retry_hint(exc: Exception, grpc_context: Any) -> bool:
    """A refusal whose ``retry-after-ms`` must reach a network caller. Serve's direct ingress
    sends the trailing metadata a replica set only when the method returns: after an exception
    it sends the code and details and drops the trailers. So such a refusal is returned, not
    raised, once ``report_errors`` has put its code, details and hint on the context (and the
    telemetry has counted it): the caller gets the same status, with its hint. (A consumer
    going away is GeneratorExit or CancelledError, not an Exception: never caught here.)"""
    return grpc_context is not None and retry_after_ms(exc) is not None


def _empty(message_type: str) -> Any:
    """An empty message of the RPC's response type (the payload a refused call returns; the
    status the client sees is the context's)."""
    return symbol_database.Default().GetSymbol(message_type)()


def _unary(name: str, takes_context: bool, response_type: str) -> Callable[..., Any]:
    async def rpc(
        self: Any,
        request: Any,
        grpc_context: Any = None,
        *,
        _trace: Mapping[str, str] | None = None,
        _metadata: Mapping[str, str] | None = None,
    ) -> Any:
        headers = _headers(grpc_context, _trace)
        try:
            with (
                self.telemetry.observe(name, headers) as span,
                report_errors(grpc_context),
                trace.use_span(span, end_on_exit=False),
            ):
                check_network_caller(self.public, grpc_context)
                _refuse_malformed(request)
                with self.admission.admit():
                    return await _invoke(
                        self.service, name, request, grpc_context, takes_context, _metadata
                    )
        except Exception as exc:
            if _carries_retry_hint(exc, grpc_context):
                return _empty(response_type)  # counted and on the context already
            raise

    rpc.__name__ = name
    return rpc


def _streaming(name: str, takes_context: bool) -> Callable[..., AsyncIterator[Any]]:
    async def rpc(
        self: Any,
        request: Any,
        grpc_context: Any = None,
        *,
        _trace: Mapping[str, str] | None = None,
        _metadata: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Any]:
        headers = _headers(grpc_context, _trace)
        try:
            with (
                self.telemetry.observe(name, headers) as span,
                report_errors(grpc_context),
                self.admission.admit(),
            ):
                check_network_caller(self.public, grpc_context)
                _refuse_malformed(request)
                stream = _invoke(
                    self.service, name, request, grpc_context, takes_context, _metadata
                ).__aiter__()
                while True:
                    # The span is current only while the service's code runs: a context
                    # attached across a yield would leak into the consumer's.
                    with trace.use_span(span, end_on_exit=False):
                        try:
                            message = await stream.__anext__()
                        except StopAsyncIteration:
                            break
                    yield message
        except Exception as exc:
            if not _carries_retry_hint(exc, grpc_context):
                raise
            # The stream ends here; its status and hint are on the context.

    rpc.__name__ = name
    return rpc


async def _report_gauges(service: Any) -> None:
    """Ray exports a gauge only if it was set since its last export, so gauges are set again
    every second, whether or not they changed."""
    while True:
        try:
            service.report_gauges()
        except Exception:
            log.warning("reporting gauges failed", exc_info=True)
        await asyncio.sleep(GAUGE_INTERVAL_S)


async def start_service(service: Any) -> None:
    """Ready a service object to serve: load its models (``warm_up``), then start its
    background work (``start``), as a replica does before its first request."""
    warm_up = getattr(service, "warm_up", None)
    if warm_up is not None:
        warm_up()
    start = getattr(service, "start", None)
    if start is not None:
        await start()


def ingress_class(
    factory: Callable[..., Any],
    service_cls: type,
    descriptor: ServiceDescriptor,
    extra_methods: Iterable[str] = (),
    *,
    public: bool = True,
) -> type:
    """Build the class Serve deploys: one method per RPC of ``descriptor``, delegating to
    ``factory(*args)``'s instance, plus ``extra_methods`` reachable through handles only.
    ``public=False``: calls over gRPC need the internal credential (``check_network_caller``)."""

    # Plain strings only: the class is pickled to the replicas, and descriptors do not pickle.
    service_name, package = descriptor.name.lower(), descriptor.full_name

    async def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        # Serve awaits an async constructor on the replica's user event loop: the loop that
        # serves requests, so whatever ``start()`` binds to a loop (locks, engine tasks) works.
        config = args[0] if args else None
        setup_tracing(getattr(config, "telemetry", None) or TelemetryConfig(), service_name)
        self.telemetry = RpcTelemetry(service_name, package)
        self.service = factory(*args, **kwargs)
        self.admission = Admission(getattr(config, "max_in_flight", None))
        await start_service(self.service)
        if hasattr(self.service, "report_gauges"):
            self._gauges = asyncio.get_running_loop().create_task(_report_gauges(self.service))

    async def ping(self: Any) -> bool:
        """Answered by any replica that is up: the health service's probe of the gateway
        (``ragtune.common.servicers``) when it runs outside a gateway replica."""
        return True

    namespace: dict[str, Any] = {"__init__": __init__, "public": public, "ping": ping}
    if hasattr(service_cls, "shutdown"):

        async def __del__(self: Any) -> None:
            # Serve awaits this when it stops the replica: free what the service holds (GPU).
            if hasattr(self, "service"):
                await self.service.shutdown()

        namespace["__del__"] = __del__
    for method in descriptor.methods:
        impl = getattr(service_cls, method.name, None)
        if impl is None:
            raise TypeError(f"{service_cls.__name__} lacks RPC method {method.name}")
        takes_context = "context" in inspect.signature(impl).parameters
        namespace[method.name] = (
            _streaming(method.name, takes_context)
            if method.server_streaming
            else _unary(method.name, takes_context, method.output_type.full_name)
        )

    for name in extra_methods:

        def delegate(self: Any, *args: Any, _name: str = name, **kwargs: Any) -> Any:
            return getattr(self.service, _name)(*args, **kwargs)

        delegate.__name__ = name
        namespace[name] = delegate

    if hasattr(service_cls, "check_health"):

        def check_health(self: Any) -> None:
            self.service.check_health()

        namespace["check_health"] = check_health

    return type(f"{service_cls.__name__}Deployment", (), namespace)


def grpc_servicer_functions(services: Iterable[ServiceSpec[Any]] = SERVICES) -> list[str]:
    """Servicer functions for Serve's gRPC proxy (``grpc_options.grpc_servicer_functions``)."""
    return [spec.servicer_function for spec in services]


def build_application(
    args: dict[str, Any] | None,
    spec: ServiceSpec[Any],
    service_cls: type,
    *,
    factory: Callable[..., Any] | None = None,
    customize: Callable[[type, Any], type] | None = None,
) -> Any:
    """The body of every ``ragtune.<service>.app:build``: validate ``args`` with the service's
    pydantic config, then bind the ingress class. Replicas, CPUs and autoscaling come from the
    ``deployments:`` section of the Serve config, which Serve applies on top of this.

    ``factory(config)`` makes the service (default: ``service_cls(config)``); ``customize(cls,
    config)`` returns a subclass of the ingress class (generation adds Serve's multiplexing).
    """
    from ray import serve

    config = spec.config_class().model_validate(args or {})
    cls = ingress_class(
        factory or service_cls,
        service_cls,
        spec.descriptor,
        spec.handle_methods,
        public=spec.public,
    )
    if customize is not None:
        cls = customize(cls, config)
    return serve.deployment(cls, name=spec.deployment).bind(config)
