"""Adapters are the platform's, not a replica's: generation services sharing a catalog
database (as replicas do) serve an adapter loaded on any of them, a service started later
serves it too, and an unload on one stops it everywhere once running requests finish."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from ragtune.common.errors import NotFound
from ragtune.generation.config import GenerationConfig
from ragtune.generation.service import GenerationService
from ragtune.v1 import common_pb2
from ragtune.v1 import generation_pb2 as pb
from tests.conftest import run


def ask(adapter: str, max_tokens: int = 24) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        messages=[pb.ChatMessage(role="user", content="Tell me about the Lyon office")],
        adapter=adapter,
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens),
    )


def test_an_adapter_loaded_on_one_replica_is_served_by_all(devmodel, tmp_path):
    pirate = tmp_path / "pirate-copy"
    shutil.copytree(devmodel.adapters["pirate"], pirate)
    config = GenerationConfig(
        model_path=str(devmodel.base_dir),
        adapters_dir=str(devmodel.base_dir.parent / "adapters"),
        database_url=f"sqlite:///{tmp_path}/catalog.db",
        adapter_roots=[str(tmp_path)],
        sync_interval_s=0.1,
        preload_adapters=[],
    )

    async def replica() -> GenerationService:
        svc = GenerationService(config)
        await asyncio.to_thread(svc.warm_up)
        await svc.start()
        return svc

    async def main():
        a, b = await replica(), await replica()
        replicas = [a, b]
        try:
            loaded = await a.LoadAdapter(
                pb.LoadAdapterRequest(name="sea", source=str(pirate), registered_by="acme")
            )
            assert loaded.adapter.loaded and loaded.adapter.registered_by == "acme"
            # b was never told: it finds the adapter in the catalog on first use.
            from_b = await b.Generate(ask("sea"))
            assert from_b.adapter == "sea" and from_b.completion_tokens > 0
            assert from_b.text == (await a.Generate(ask("sea"))).text  # the same weights

            listed = {x.name: x for x in (await a.ListAdapters(pb.ListAdaptersRequest())).adapters}
            assert listed["sea"].registered_by == "acme"
            assert sorted(listed["sea"].resident_on) == sorted(
                [a.shared.replica_id, b.shared.replica_id]
            )

            c = await replica()  # started later (a restart, autoscaling)
            replicas.append(c)
            assert (await c.Generate(ask("sea"))).text == from_b.text

            # Unload on a while b streams with the adapter: b's request runs to its end, and
            # when UnloadAdapter returns no replica serves the adapter any more.
            stream = b.GenerateStream(ask("sea", max_tokens=48)).__aiter__()
            first = await stream.__anext__()
            unload = asyncio.create_task(a.UnloadAdapter(pb.UnloadAdapterRequest(name="sea")))
            rest = [piece async for piece in stream]
            assert (rest or [first])[-1].finish_reason in ("stop", "length")
            reply = await asyncio.wait_for(unload, 30)
            assert not reply.adapter.loaded
            for svc in replicas:
                with pytest.raises(NotFound):
                    await svc.Generate(ask("sea"))
            listed = {x.name for x in (await c.ListAdapters(pb.ListAdaptersRequest())).adapters}
            assert "sea" not in listed and "pirate" in listed  # shipped ones are untouched

            # Loaded again, it is back everywhere.
            await c.LoadAdapter(pb.LoadAdapterRequest(name="sea", source=str(pirate)))
            assert (await a.Generate(ask("sea"))).text == from_b.text
        finally:
            for svc in replicas:
                await svc.shutdown()

    run(main())


def test_unloading_an_unknown_adapter_is_not_found(devmodel, tmp_path):
    config = GenerationConfig(
        model_path=str(devmodel.base_dir),
        database_url=f"sqlite:///{tmp_path}/catalog.db",
        preload_adapters=[],
    )

    async def main():
        svc = GenerationService(config)
        await asyncio.to_thread(svc.warm_up)
        await svc.start()
        try:
            with pytest.raises(NotFound, match="nope"):
                await svc.UnloadAdapter(pb.UnloadAdapterRequest(name="nope"))
        finally:
            await svc.shutdown()

    run(main())
