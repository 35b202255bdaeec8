"""Turn a plain service class into a Ray Serve deployment with a gRPC ingress.

The service classes know nothing of Ray: their methods are the RPCs, named as in the proto,
``async def Rpc(self, request[, context])``. This module wraps them once, generically, so that
errors are mapped to status codes in one place and the wiring is not pasted into every service.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from ragtune.common.context import CallContext
from ragtune.common.errors import to_status

GRPC_SERVICERS = [
    f"ragtune.v1.{name}_pb2_grpc.add_{service}Servicer_to_server"
    for name, service in [
        ("gateway", "Gateway"),
        ("embedding", "Embedding"),
        ("retrieval", "Retrieval"),
        ("rerank", "Rerank"),
        ("generation", "Generation"),
    ]
]
"""Servicer functions for Serve's gRPC proxy (``grpc_options.grpc_servicer_functions``)."""


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
        raise


def _unary(name: str, takes_context: bool) -> Callable[..., Any]:
    async def rpc(self: Any, request: Any, grpc_context: Any = None) -> Any:
        method = getattr(self.service, name)
        with report_errors(grpc_context):
            if takes_context:
                return await method(request, CallContext.from_grpc(grpc_context))
            return await method(request)

    rpc.__name__ = name
    return rpc


def _streaming(name: str, takes_context: bool) -> Callable[..., AsyncIterator[Any]]:
    async def rpc(self: Any, request: Any, grpc_context: Any = None) -> AsyncIterator[Any]:
        method = getattr(self.service, name)
        with report_errors(grpc_context):
            stream = (
                method(request, CallContext.from_grpc(grpc_context))
                if takes_context
                else method(request)
            )
            async for message in stream:
                yield message

    rpc.__name__ = name
    return rpc


def ingress_class(
    factory: Callable[..., Any],
    service_cls: type,
    descriptor: ServiceDescriptor,
    extra_methods: Iterable[str] = (),
) -> type:
    """Build the class Serve deploys: one method per RPC of ``descriptor``, delegating to
    ``factory(*args)``'s instance, plus ``extra_methods`` reachable through handles only."""

    async def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        # Serve awaits an async constructor on the replica's user event loop: the loop that
        # serves requests, so whatever ``start()`` binds to a loop (locks, engine tasks) works.
        self.service = factory(*args, **kwargs)
        warm_up = getattr(self.service, "warm_up", None)
        if warm_up is not None:
            warm_up()
        start = getattr(self.service, "start", None)
        if start is not None:
            await start()

    namespace: dict[str, Any] = {"__init__": __init__}
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
        make = _streaming if method.server_streaming else _unary
        namespace[method.name] = make(method.name, takes_context)

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


def build_application(
    args: dict[str, Any] | None,
    *,
    config_cls: type,
    service_cls: type,
    descriptor: ServiceDescriptor,
    deployment_name: str,
    factory: Callable[..., Any] | None = None,
    extra_methods: Iterable[str] = (),
) -> Any:
    """The body of every ``ragtune.<service>.app:build``: validate ``args`` with the service's
    pydantic config, then bind the ingress class. Replicas, CPUs and autoscaling come from the
    ``deployments:`` section of the Serve config, which Serve applies on top of this."""
    from ray import serve

    config = config_cls.model_validate(args or {})
    cls = ingress_class(factory or service_cls, service_cls, descriptor, extra_methods)
    return serve.deployment(cls, name=deployment_name).bind(config)
