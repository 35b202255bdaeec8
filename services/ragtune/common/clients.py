"""How one service calls another: the transports under the typed clients of
``ragtune.v1.clients`` (generated from the protos, one method per RPC).

- ``LocalTransport``: a plain service object in this process (unit tests);
- ``HandleTransport``: a Serve deployment through a ``DeploymentHandle`` (under Serve);
- ``ChannelTransport``: a gRPC channel (load tests, tools, tests of the public port).

So the gateway's code is the same in a unit test and under Serve, and ``client(SPEC, transport)``
gives the typed client of a service declared in ``ragtune.common.services``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from ragtune.common.telemetry import carrier


class LocalTransport:
    """Calls a plain service object in the same process."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def bind(self, descriptor: ServiceDescriptor) -> None:
        missing = [m.name for m in descriptor.methods if not hasattr(self.service, m.name)]
        if missing:
            raise TypeError(
                f"{type(self.service).__name__} cannot serve {descriptor.full_name}: "
                f"no method {', '.join(missing)}"
            )

    async def unary(
        self, rpc: str, request: Any, response_type: type[Any], *, model_id: str = ""
    ) -> Any:
        return await getattr(self.service, rpc)(request)

    def stream(
        self, rpc: str, request: Any, response_type: type[Any], *, model_id: str = ""
    ) -> AsyncIterator[Any]:
        return getattr(self.service, rpc)(request)


class HandleTransport:
    """Calls a Serve deployment through a ``DeploymentHandle`` (resolved lazily by name),
    sending the current trace context along (the callee's ingress continues the trace)."""

    def __init__(self, app_name: str, deployment_name: str) -> None:
        self.app_name = app_name
        self.deployment_name = deployment_name
        self._handle: Any = None

    def bind(self, descriptor: ServiceDescriptor) -> None:
        """Nothing to check before the handle resolves: the deployment class is built from
        the same descriptor (``ragtune.common.serving.ingress_class``)."""

    @property
    def handle(self) -> Any:
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_deployment_handle(self.deployment_name, self.app_name)
        return self._handle

    def _method(self, rpc: str, **options: Any) -> Any:
        handle = self.handle.options(**options) if options else self.handle
        return getattr(handle, rpc)

    async def unary(
        self, rpc: str, request: Any, response_type: type[Any], *, model_id: str = ""
    ) -> Any:
        options = {"multiplexed_model_id": model_id} if model_id else {}
        return await self._method(rpc, **options).remote(request, _trace=carrier())

    def stream(
        self, rpc: str, request: Any, response_type: type[Any], *, model_id: str = ""
    ) -> AsyncIterator[Any]:
        options: dict[str, Any] = {"stream": True}
        if model_id:
            options["multiplexed_model_id"] = model_id
        return self._method(rpc, **options).remote(request, _trace=carrier())


class ChannelTransport:
    """Calls a service over a ``grpc.aio`` channel, as an outside client would: through Serve's
    gRPC ingress, which routes on the ``application`` metadata (and ``multiplexed_model_id``)."""

    def __init__(
        self,
        channel: Any,
        *,
        application: str,
        metadata: Sequence[tuple[str, str]] = (),
        timeout_s: float | None = None,
    ) -> None:
        self.channel = channel
        self.metadata = (("application", application), *metadata)
        self.timeout_s = timeout_s
        self._service = ""

    def bind(self, descriptor: ServiceDescriptor) -> None:
        self._service = descriptor.full_name

    def _call_args(self, model_id: str) -> dict[str, Any]:
        metadata = self.metadata
        if model_id:
            metadata = (*metadata, ("multiplexed_model_id", model_id))
        return {"metadata": metadata, "timeout": self.timeout_s}

    async def unary(
        self, rpc: str, request: Any, response_type: type[Any], *, model_id: str = ""
    ) -> Any:
        call = self.channel.unary_unary(
            f"/{self._service}/{rpc}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return await call(request, **self._call_args(model_id))

    def stream(
        self, rpc: str, request: Any, response_type: type[Any], *, model_id: str = ""
    ) -> AsyncIterator[Any]:
        call = self.channel.unary_stream(
            f"/{self._service}/{rpc}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return call(request, **self._call_args(model_id))
