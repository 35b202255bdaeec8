"""What Serve's gRPC servers register for ragtune: the import paths in the Serve config's
``grpc_options.grpc_servicer_functions`` name the functions of this module.

Serve calls each with a placeholder servicer and its gRPC server (its Python proxy's, or, under
the HAProxy ingress, each replica's own), keeps the request decoders they register and routes
the calls to the replicas. The functions here differ from the generated ``add_*_to_server`` in
three ways:

- **Decoding cannot fail.** A generated decoder raises ``DecodeError`` on bytes that are not a
  valid message, which gRPC's server answers UNKNOWN with the exception's class and text in
  the details. Here such bytes decode to a :class:`MalformedRequest`, which the ingress wrapper
  (``ragtune.common.serving``) refuses with INVALID_ARGUMENT like any other bad input.
- **The public service brings the standard health service** (``grpc.health.v1.Health``, what
  Kubernetes gRPC probes and load balancers call) on the same port. Serve runs it on the
  server itself ("passthrough", as Serve runs its own reflection service), not on a replica.
- **Reflection is opt-in and public only**: ``add_ReflectionServicer_to_server`` advertises
  the gateway and the health service, never the internal services. List it in
  ``grpc_servicer_functions`` to turn it on (``ragtune serve --reflection``), and keep Serve's
  own ``enable_reflection`` off: it advertises every registered service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ragtune.common.services import GATEWAY, SERVICES, ServiceSpec

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_PROBE_TIMEOUT_S = 2.0
HEALTH_CACHE_S = 1.0  # probes of one server share a gateway check for this long


class MalformedRequest:
    """Stands for request bytes that are not a valid ``message_type`` message."""

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type

    def __repr__(self) -> str:
        return f"MalformedRequest({self.message_type})"


def _decoder(message_class: type[Message]) -> Callable[[bytes], Any]:
    name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> Message | MalformedRequest:
        try:
            return message_class.FromString(data)
        except DecodeError:  # also invalid UTF-8 in a string field
            return MalformedRequest(name)

    return decode


def _passthrough(server: Any, service_name: str) -> None:
    """Have Serve's server run ``service_name`` itself instead of routing it to a replica (a
    plain gRPC server, in tests, runs everything itself)."""
    mark = getattr(server, "add_passthrough_service", None)
    if mark is not None:
        mark(service_name)


def register(descriptor: ServiceDescriptor, servicer: Any, server: Any) -> None:
    """What a generated ``add_<Service>Servicer_to_server`` does, with decoders that hand on
    malformed requests instead of failing."""
    handlers = {}
    for method in descriptor.methods:
        request = GetMessageClass(method.input_type)
        response = GetMessageClass(method.output_type)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_decoder(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(descriptor.full_name, handlers),)
    )
    server.add_registered_method_handlers(descriptor.full_name, handlers)


def _servicer_function(spec: ServiceSpec[Any]) -> Callable[[Any, Any], None]:
    def add(servicer: Any, server: Any) -> None:
        if spec is GATEWAY:
            add_HealthServicer_to_server(None, server)
        register(spec.descriptor, servicer, server)

    add.__name__ = add.__qualname__ = spec.servicer_function.rpartition(".")[2]
    return add


def __getattr__(name: str) -> Callable[[Any, Any], None]:
    """``add_<Service>Servicer_to_server`` for every service of the service table (the names
    ``ServiceSpec.servicer_function`` gives)."""
    for spec in SERVICES:
        if spec.servicer_function == f"{__name__}.{name}":
            return _servicer_function(spec)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- health ----------------------------------------------------------------------------------


def _replica_app() -> str | None:
    """The Serve application of this process's replica; None outside a replica (the proxy)."""
    from ray.serve.context import _get_internal_replica_context

    context = _get_internal_replica_context()
    return context.app_name if context is not None else None


class GatewayHealth(health.aio.HealthServicer):
    """The standard health service, answering for "" (the server as a whole) and the public
    service: SERVING while the gateway answers, NOT_SERVING while it does not; any other
    service name is NOT_FOUND, as the health protocol says.

    A gateway replica (the HAProxy ingress routes there) is the gateway: its gRPC server starts
    only once the gateway is constructed, so it is SERVING. Anywhere else (Serve's proxy, or
    another application's replica) it asks a gateway replica through a Serve handle, at most
    once per ``HEALTH_CACHE_S``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.services = ("", GATEWAY.descriptor.full_name)
        self._checked_at = float("-inf")
        self._lock: asyncio.Lock | None = None
        self._handle: Any = None

    async def _gateway_answers(self) -> bool:
        if _replica_app() == GATEWAY.name:
            return True
        try:
            if self._handle is None:
                from ray import serve

                self._handle = await asyncio.to_thread(
                    serve.get_deployment_handle, GATEWAY.deployment, GATEWAY.name
                )
            await asyncio.wait_for(self._handle.ping.remote(), HEALTH_PROBE_TIMEOUT_S)
        except Exception as exc:  # any failure to reach it: not serving
            log.info("health: the gateway does not answer (%s)", type(exc).__name__)
            return False
        return True

    async def refresh(self) -> None:
        self._lock = self._lock or asyncio.Lock()  # made on the server's own loop
        async with self._lock:
            if time.monotonic() - self._checked_at < HEALTH_CACHE_S:
                return
            serving = await self._gateway_answers()
            self._checked_at = time.monotonic()
        status = SERVING if serving else NOT_SERVING
        for service in self.services:
            await self.set(service, status)

    async def Check(self, request: Any, context: Any) -> Any:
        if request.service in self.services:
            await self.refresh()
        return await super().Check(request, context)

    async def List(self, request: Any, context: Any) -> Any:
        await self.refresh()
        reply = health_pb2.HealthListResponse()
        for service in self.services:
            reply.statuses[service].status = self._server_status[service]
        return reply

    async def Watch(self, request: Any, context: Any) -> None:
        """The current status, then each change (checked every few seconds while watched)."""
        watching = asyncio.get_running_loop().create_task(super().Watch(request, context))
        try:
            while not watching.done():
                if request.service in self.services:
                    await self.refresh()
                await asyncio.wait({watching}, timeout=5 * HEALTH_CACHE_S)
        finally:
            watching.cancel()


def add_HealthServicer_to_server(servicer: Any, server: Any) -> None:
    """The standard health service on ``server``, run by the server itself."""
    _passthrough(server, HEALTH_SERVICE)
    health_pb2_grpc.add_HealthServicer_to_server(GatewayHealth(), server)


def add_ReflectionServicer_to_server(servicer: Any, server: Any) -> None:
    """Server reflection (grpcurl, grpcui) advertising the public services only."""
    from grpc_reflection.v1alpha import reflection

    _passthrough(server, reflection.SERVICE_NAME)
    names = (GATEWAY.descriptor.full_name, HEALTH_SERVICE, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
