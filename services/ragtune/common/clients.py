"""How one service calls another: the transports under the typed clients of
``ragtune.v1.clients`` (generated from the protos, one method per RPC).

- ``LocalTransport``: a plain service object in this process (unit tests);
- ``HandleTransport``: a Serve deployment through a ``DeploymentHandle`` (under Serve).

So the gateway's code is the same in a unit test and under Serve, and ``client(SPEC, transport)``
gives the typed client of a service declared in ``ragtune.common.services``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
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


# Internal calls a repetition changes nothing for — the RPCs the protos mark with
# `option idempotency_level` (reads, and writes keyed by id) — are retried once when the replica
# serving them died, after a pause drawn from this range. Generation is not marked: a repeat
# costs a whole generation.
RETRY_PAUSE_S = (0.05, 0.25)


def idempotent_rpcs(descriptor: ServiceDescriptor) -> frozenset[str]:
    return frozenset(
        m.name
        for m in descriptor.methods
        if m.GetOptions().idempotency_level != m.GetOptions().IDEMPOTENCY_UNKNOWN
    )


def replica_gone(exc: BaseException) -> bool:
    """Whether a handle call failed because its replica died or is gone (not because the
    callee refused the request)."""
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(names & {"ActorDiedError", "RayActorError", "DeploymentUnavailableError",
                         "ActorUnavailableError"})  # fmt: skip


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


class HandleTransport:
    """Calls a Serve deployment through a ``DeploymentHandle`` (resolved lazily by name),
    sending the current trace context along (the callee's ingress continues the trace).

    ``metadata``: the metadata of the caller's own client, sent with every call (``_metadata``,
    ``ragtune.common.serving``), so the callee authenticates that client as if it had called
    over gRPC; ``for_caller`` makes such a transport per request over one shared handle.
    """

    def __init__(
        self, app_name: str, deployment_name: str, *, metadata: Mapping[str, str] | None = None
    ) -> None:
        self.app_name = app_name
        self.deployment_name = deployment_name
        self.metadata = dict(metadata) if metadata is not None else None
        self._handle: Any = None
        self.idempotent: frozenset[str] = frozenset()  # set by bind()

    def bind(self, descriptor: ServiceDescriptor) -> None:
        """Nothing to check before the handle resolves (the deployment class is built from the
        same descriptor, ``ragtune.common.serving.ingress_class``); note what may be retried."""
        self.idempotent = idempotent_rpcs(descriptor)

    def for_caller(self, metadata: Mapping[str, str]) -> HandleTransport:
        """This transport carrying ``metadata`` on every call, sharing the resolved handle
        (a handle per request would set up its own router each time)."""
        transport = HandleTransport(self.app_name, self.deployment_name, metadata=metadata)
        transport._handle = self.handle
        transport.idempotent = self.idempotent
        return transport

    @property
    def handle(self) -> Any:
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_deployment_handle(self.deployment_name, self.app_name)
        return self._handle

    def _method(self, rpc: str, **options: Any) -> Any:
        handle = self.handle.options(**options) if options else self.handle
        return getattr(handle, rpc)

    def _extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {"_trace": carrier()}
        if self.metadata is not None:
            extras["_metadata"] = self.metadata
        return extras

    async def unary(
        self, rpc: str, request: Any, response_type: type[Any], *, model_id: str = ""
    ) -> Any:
        options = {"multiplexed_model_id": model_id} if model_id else {}
        try:
            return await self._method(rpc, **options).remote(request, **self._extras())
        except Exception as exc:
            if rpc not in self.idempotent or not replica_gone(exc):
                raise
        # The replica died under the call: once more, after a short random pause (so callers
        # of the same dead replica do not all return at once), on whichever replica Serve
        # routes to now. Only calls whose repetition changes nothing are retried.
        await asyncio.sleep(random.uniform(*RETRY_PAUSE_S))
        return await self._method(rpc, **options).remote(request, **self._extras())

    def stream(
        self, rpc: str, request: Any, response_type: type[Any], *, model_id: str = ""
    ) -> AsyncIterator[Any]:
        options: dict[str, Any] = {"stream": True}
        if model_id:
            options["multiplexed_model_id"] = model_id
        return self._method(rpc, **options).remote(request, **self._extras())
