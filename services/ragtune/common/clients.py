"""How one service calls another: through a Serve handle in production, directly in tests.

Both clients expose ``call(method, request)`` and ``stream(method, request)``, so the gateway's
code is the same whether it runs under Ray Serve or in a unit test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from ragtune.common.telemetry import carrier


class ServiceClient(Protocol):
    async def call(self, method: str, request: Any) -> Any: ...

    def stream(self, method: str, request: Any, *, model_id: str = "") -> AsyncIterator[Any]:
        """``model_id``: Serve's multiplexed model id (a LoRA adapter's name), so the request
        goes preferably to a replica that already holds it."""
        ...


class LocalClient:
    """Calls a plain service object in the same process."""

    def __init__(self, service: Any) -> None:
        self.service = service

    async def call(self, method: str, request: Any) -> Any:
        return await getattr(self.service, method)(request)

    def stream(self, method: str, request: Any, *, model_id: str = "") -> AsyncIterator[Any]:
        return getattr(self.service, method)(request)


class HandleClient:
    """Calls a Serve deployment through a ``DeploymentHandle`` (resolved lazily by name),
    sending the current trace context along (the callee's ingress continues the trace)."""

    def __init__(self, app_name: str, deployment_name: str) -> None:
        self.app_name = app_name
        self.deployment_name = deployment_name
        self._handle: Any = None

    @property
    def handle(self) -> Any:
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_deployment_handle(self.deployment_name, self.app_name)
        return self._handle

    async def call(self, method: str, request: Any) -> Any:
        return await getattr(self.handle, method).remote(request, _trace=carrier())

    def stream(self, method: str, request: Any, *, model_id: str = "") -> AsyncIterator[Any]:
        options: dict[str, Any] = {"stream": True}
        if model_id:
            options["multiplexed_model_id"] = model_id
        return getattr(self.handle.options(**options), method).remote(request, _trace=carrier())
