"""What ragtune registers on Serve's gRPC servers (ragtune.common.servicers), on a plain gRPC
server: decoding that hands malformed bytes on, the standard health service, reflection of the
public services only."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ragtune.common import servicers
from ragtune.common.errors import InvalidArgument, to_status
from ragtune.common.servicers import MalformedRequest
from ragtune.common.services import GATEWAY
from ragtune.common.serving import _refuse_malformed
from ragtune.v1 import gateway_pb2, retrieval_pb2

SERVING, NOT_SERVING = (
    health_pb2.HealthCheckResponse.SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING,
)


class Echo:
    """A Gateway servicer whose ListCollections says what it was handed."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    async def ListCollections(self, request, context):
        self.seen.append(request)
        try:
            _refuse_malformed(request)
        except InvalidArgument as exc:
            await context.abort(*to_status(exc))
        return retrieval_pb2.ListCollectionsResponse()

    def __getattr__(self, name):
        return self.ListCollections  # every RPC is registered; the test calls this one


async def _serve(register, *args):
    server = grpc.aio.server()
    for add in register:
        add(*args, server) if args else add(None, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def test_malformed_bytes_reach_the_servicer_as_malformed_request():
    async def main():
        echo = Echo()
        server = grpc.aio.server()
        servicers.register(GATEWAY.descriptor, echo, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/ragtune.v1.Gateway/ListCollections")
                await call(b"")  # an empty message is a valid one
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(b"\xff\xff\xff\xff")
                return echo.seen, err.value
        finally:
            await server.stop(None)

    seen, err = asyncio.run(main())
    assert isinstance(seen[0], gateway_pb2.GatewayListCollectionsRequest)
    assert isinstance(seen[1], MalformedRequest)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "request: not a valid ragtune.v1.GatewayListCollectionsRequest message"
    )


@pytest.mark.parametrize("gateway_up", [True, False])
def test_health_answers_for_the_server_and_the_gateway(monkeypatch, gateway_up):
    async def answers(self):
        return gateway_up

    monkeypatch.setattr(servicers.GatewayHealth, "_gateway_answers", answers)

    async def main():
        server, target = await _serve([servicers.add_HealthServicer_to_server])
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                statuses = [
                    (await stub.Check(health_pb2.HealthCheckRequest(service=name))).status
                    for name in ("", "ragtune.v1.Gateway")
                ]
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await stub.Check(health_pb2.HealthCheckRequest(service="ragtune.v1.Retrieval"))
                watch = stub.Watch(health_pb2.HealthCheckRequest(service="ragtune.v1.Gateway"))
                first = await watch.read()
                watch.cancel()
                return statuses, unknown.value.code(), first.status
        finally:
            await server.stop(None)

    statuses, unknown, watched = asyncio.run(main())
    expected = SERVING if gateway_up else NOT_SERVING
    assert statuses == [expected, expected] and watched == expected
    assert unknown == grpc.StatusCode.NOT_FOUND


def test_a_gateway_replica_is_serving_without_asking_anyone(monkeypatch):
    monkeypatch.setattr(servicers, "_replica_app", lambda: GATEWAY.name)
    assert asyncio.run(servicers.GatewayHealth()._gateway_answers())


def test_reflection_advertises_the_public_services_only():
    async def main():
        server, target = await _serve(
            [
                servicers.add_HealthServicer_to_server,
                servicers.add_ReflectionServicer_to_server,
            ]
        )
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                async for reply in stub.ServerReflectionInfo(iter([request])):
                    return {s.name for s in reply.list_services_response.service}
        finally:
            await server.stop(None)

    assert asyncio.run(main()) == {
        "ragtune.v1.Gateway",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
