"""How the load generator reaches a gateway: over gRPC (``GrpcCaller``, the platform as clients
see it) or in this process (``InProcessCaller``, the baseline: the same service objects with no
gRPC and no Serve between them). Both raise ``CallError`` with the gRPC code a client would get.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc

from ragtune.common.context import CallContext
from ragtune.common.errors import to_status
from ragtune.v1 import gateway_pb2_grpc


class CallError(Exception):
    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


class Caller(Protocol):
    async def answer(self, request: Any, key: str, timeout_s: float) -> Any: ...

    def answer_stream(self, request: Any, key: str, timeout_s: float) -> AsyncIterator[Any]: ...

    async def ingest(self, request: Any, key: str, timeout_s: float) -> Any: ...

    async def get_collection(self, request: Any, key: str, timeout_s: float) -> Any: ...

    async def list_collections(self, request: Any, key: str, timeout_s: float) -> Any: ...

    async def delete_collection(self, request: Any, key: str, timeout_s: float) -> Any: ...

    async def load_adapter(self, request: Any, key: str, timeout_s: float) -> Any: ...

    async def unload_adapter(self, request: Any, key: str, timeout_s: float) -> Any: ...

    async def close(self) -> None: ...


class _Methods:
    """The gateway RPCs the generator sends, each through ``_unary``/``_stream`` over the
    target's own callable for it (a stub method, or the service object's)."""

    target: Any

    async def _unary(self, method: Any, request: Any, key: str, timeout_s: float) -> Any:
        raise NotImplementedError

    def _stream(self, method: Any, request: Any, key: str, timeout_s: float) -> AsyncIterator[Any]:
        raise NotImplementedError

    async def answer(self, request: Any, key: str, timeout_s: float) -> Any:
        return await self._unary(self.target.Answer, request, key, timeout_s)

    def answer_stream(self, request: Any, key: str, timeout_s: float) -> AsyncIterator[Any]:
        return self._stream(self.target.AnswerStream, request, key, timeout_s)

    async def ingest(self, request: Any, key: str, timeout_s: float) -> Any:
        return await self._unary(self.target.Ingest, request, key, timeout_s)

    async def get_collection(self, request: Any, key: str, timeout_s: float) -> Any:
        return await self._unary(self.target.GetCollection, request, key, timeout_s)

    async def list_collections(self, request: Any, key: str, timeout_s: float) -> Any:
        return await self._unary(self.target.ListCollections, request, key, timeout_s)

    async def delete_collection(self, request: Any, key: str, timeout_s: float) -> Any:
        return await self._unary(self.target.DeleteCollection, request, key, timeout_s)

    async def load_adapter(self, request: Any, key: str, timeout_s: float) -> Any:
        return await self._unary(self.target.LoadAdapter, request, key, timeout_s)

    async def unload_adapter(self, request: Any, key: str, timeout_s: float) -> Any:
        return await self._unary(self.target.UnloadAdapter, request, key, timeout_s)


class GrpcCaller(_Methods):
    """One ``grpc.aio`` channel to the gateway (HTTP/2 multiplexes every in-flight call).

    ``retries``: the documented client's gRPC service config (``ragtune.client``), so the
    idempotent RPCs are retried on UNAVAILABLE as that client retries them (the chaos run
    measures what such a client sees); off for load runs, which report every failure."""

    def __init__(
        self, target: str, *, application: str = "gateway", tls: bool = False,
        retries: bool = False,
    ) -> None:  # fmt: skip
        # Many concurrent streams on one connection: lift gRPC's default cap of 100.
        options: list[tuple[str, Any]] = [("grpc.max_concurrent_streams", 10_000)]
        if retries:
            from ragtune.client import retry_options

            options += retry_options()
        self.channel = (
            grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
            if tls
            else grpc.aio.insecure_channel(target, options=options)
        )
        self.target = gateway_pb2_grpc.GatewayStub(self.channel)
        self.application = application

    def _metadata(self, key: str) -> tuple[tuple[str, str], ...]:
        return (("application", self.application), ("authorization", f"Bearer {key}"))

    async def _unary(self, method: Any, request: Any, key: str, timeout_s: float) -> Any:
        try:
            return await method(request, metadata=self._metadata(key), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise CallError(exc.code().name, exc.details() or "") from None

    async def _stream(
        self, method: Any, request: Any, key: str, timeout_s: float
    ) -> AsyncIterator[Any]:
        call = method(request, metadata=self._metadata(key), timeout=timeout_s)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise CallError(exc.code().name, exc.details() or "") from None
        finally:
            call.cancel()  # a no-op when the stream ended; stops the server's work otherwise

    async def wait_ready(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.channel.channel_ready(), timeout_s)
        except TimeoutError:
            raise CallError("UNAVAILABLE", "no gateway answering") from None

    async def close(self) -> None:
        await self.channel.close()


class InProcessCaller(_Methods):
    """Calls a ``GatewayService`` object directly, the key in its call context."""

    def __init__(self, gateway: Any) -> None:
        self.target = gateway

    @staticmethod
    def _context(key: str) -> CallContext:
        return CallContext(metadata={"authorization": f"Bearer {key}"})

    async def _unary(self, method: Any, request: Any, key: str, timeout_s: float) -> Any:
        try:
            async with asyncio.timeout(timeout_s):
                return await method(request, self._context(key))
        except TimeoutError:
            raise CallError("DEADLINE_EXCEEDED", "deadline exceeded") from None
        except Exception as exc:
            code, details = to_status(exc)
            raise CallError(code.name, details) from None

    async def _stream(
        self, method: Any, request: Any, key: str, timeout_s: float
    ) -> AsyncIterator[Any]:
        try:
            async with asyncio.timeout(timeout_s):
                async for message in method(request, self._context(key)):
                    yield message
        except TimeoutError:
            raise CallError("DEADLINE_EXCEEDED", "deadline exceeded") from None
        except Exception as exc:
            code, details = to_status(exc)
            raise CallError(code.name, details) from None

    async def close(self) -> None:
        await self.target.shutdown()
