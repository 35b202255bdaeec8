"""Adapters are the platform's: with two generation replicas sharing a catalog, an adapter
loaded once answers on both (each called on its own gRPC port), survives a replica restart,
and an unload under load fails no request."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import ray

from ragtune.local import direct_grpc_targets
from ragtune.v1 import common_pb2, generation_pb2_grpc
from ragtune.v1 import generation_pb2 as pb
from tests.integration.conftest import Platform, internal_channel

pytestmark = pytest.mark.integration

APP = "adapters2"
TOKEN = Platform.internal(APP)[1:]  # the internal credential (a replica's own port)


def replicas(expected: int = 2, *, other_than: frozenset[str] = frozenset(), timeout_s=180):
    deadline = time.monotonic() + timeout_s
    while True:
        targets = direct_grpc_targets().get(APP, [])
        if len(targets) == expected and not set(targets) <= other_than:
            return targets
        if time.monotonic() > deadline:
            raise TimeoutError(f"{APP} replicas: {targets}")
        time.sleep(0.5)


def ask(adapter: str, max_tokens: int = 24) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        messages=[pb.ChatMessage(role="user", content="Tell me about the Lyon office")],
        adapter=adapter,
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens),
    )


def stub(target: str) -> generation_pb2_grpc.GenerationStub:
    return generation_pb2_grpc.GenerationStub(internal_channel(target))


def test_an_adapter_loaded_once_serves_on_every_replica_and_unloads_under_load(platform, devmodel):
    first, second = replicas()
    pirate = str(devmodel.adapters["pirate"])
    stub(first).LoadAdapter(pb.LoadAdapterRequest(name="sea", source=pirate, registered_by="t"))
    texts = {
        target: stub(target).Generate(ask("sea"), timeout=120).text for target in (first, second)
    }
    assert len(set(texts.values())) == 1 and next(iter(texts.values()))
    listed = {a.name: a for a in stub(second).ListAdapters(pb.ListAdaptersRequest()).adapters}
    assert len(listed["sea"].resident_on) == 2 and listed["sea"].registered_by == "t"

    # A replica restart: the new replica serves the adapter without being told.
    # Serve names its replica actors SERVE_REPLICA::<app>#<deployment>#<id>.
    (victim, *_) = [
        a for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#")
    ]  # fmt: skip
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    fresh = replicas(other_than=frozenset({first, second}))
    for target in fresh:
        assert stub(target).Generate(ask("sea"), timeout=120).text == texts[first]

    # Unload under load: streams with the adapter and without it on both replicas while
    # UnloadAdapter runs; every one of them completes.
    async def load_and_unload() -> tuple[int, int, int]:
        channels = [grpc.aio.insecure_channel(t) for t in fresh]
        stubs = [generation_pb2_grpc.GenerationStub(c) for c in channels]
        ok = failed = 0
        mix = ["sea", "pirate", ""] * 4
        started = [asyncio.Event() for _ in mix]

        async def one(i: int, adapter: str) -> None:
            nonlocal ok, failed
            last = None
            try:
                async for piece in stubs[i % 2].GenerateStream(
                    ask(adapter, 48), timeout=120, metadata=TOKEN
                ):
                    started[i].set()
                    last = piece
                ok += bool(last is not None and last.finish_reason)
            except grpc.aio.AioRpcError:
                failed += 1
            finally:
                started[i].set()

        traffic = [asyncio.create_task(one(i, a)) for i, a in enumerate(mix)]
        await asyncio.gather(*(event.wait() for event in started))  # every stream is running
        await stubs[0].UnloadAdapter(
            pb.UnloadAdapterRequest(name="sea"), timeout=120, metadata=TOKEN
        )
        await asyncio.gather(*traffic)
        for channel in channels:
            await channel.close()
        return ok, failed, len(traffic)

    ok, failed, sent = asyncio.run(load_and_unload())
    assert (ok, failed) == (sent, 0)
    for target in fresh:  # gone everywhere once UnloadAdapter returned
        with pytest.raises(grpc.RpcError) as err:
            stub(target).Generate(ask("sea"), timeout=60)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
