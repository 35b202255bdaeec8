"""How one service calls another: the transports under the typed clients of
``ragtune.v1.clients`` (generated from the protos, one method per RPC).

- ``LocalTransport``: a plain service object in this process (unit tests);
- ``HandleTransport``: a Serve deployment through a ``DeploymentHandle`` (under Serve).

So the gateway's code is the same in a unit test and under Serve, and ``client(SPEC, transport)``
gives the typed client of a service declared in ``ragtune.common.services``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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
