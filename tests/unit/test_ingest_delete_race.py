"""An Upsert racing a DeleteCollection of the same collection (issue 21: an IntegrityError, as
INTERNAL, about one time in three): the write either lands before the drop or is NOT_FOUND."""

from __future__ import annotations

import asyncio
import random

import grpc
import numpy as np

from ragtune.common.errors import to_status
from ragtune.retrieval.config import RetrievalConfig
from ragtune.retrieval.service import RetrievalService
from ragtune.v1 import retrieval_pb2 as pb

DIMS = 4
ROUNDS = 60


def _chunks(n: int) -> list[pb.Chunk]:
    rng = np.random.default_rng(n)
    return [
        pb.Chunk(
            chunk_id=f"d{i}#0", doc_id=f"d{i}", text=f"text {i}", vector=rng.random(DIMS).tolist()
        )
        for i in range(n)
    ]


async def _code(call) -> grpc.StatusCode:
    await asyncio.sleep(random.random() * 0.002)  # either may reach the replica first
    try:
        await call
    except Exception as exc:
        return to_status(exc)[0]
    return grpc.StatusCode.OK


async def _race(svc: RetrievalService) -> list[tuple[grpc.StatusCode, grpc.StatusCode]]:
    outcomes = []
    for n in range(ROUNDS):
        await svc.CreateCollection(
            pb.CreateCollectionRequest(tenant="acme", name="kb", dims=DIMS, embedding_model="m")
        )
        upsert = svc.Upsert(pb.UpsertRequest(tenant="acme", collection="kb", chunks=_chunks(8)))
        drop = svc.DeleteCollection(pb.DeleteCollectionRequest(tenant="acme", name="kb"))
        calls = [_code(upsert), _code(drop)] if n % 2 else [_code(drop), _code(upsert)]
        codes = await asyncio.gather(*calls)
        outcomes.append((codes[0], codes[1]) if n % 2 else (codes[1], codes[0]))
    return outcomes


def test_upsert_racing_a_drop_is_ok_or_not_found_never_internal(database_url):
    random.seed(0)
    svc = RetrievalService(RetrievalConfig(database_url=database_url))
    outcomes = asyncio.run(_race(svc))
    upserts = {upsert for upsert, _ in outcomes}
    assert upserts <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}, outcomes
    assert {drop for _, drop in outcomes} == {grpc.StatusCode.OK}, outcomes
    # Both orders happened, and nothing of the dropped collections was left behind.
    assert upserts == {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}, outcomes
    with svc.store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM chunks").scalar_one() == 0
    assert svc.store.list_collections("acme") == []
