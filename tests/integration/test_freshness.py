"""Read-your-writes across replicas: two retrieval replicas, each write searched with the seq it
returned, through the gRPC port."""

from __future__ import annotations

import time
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragtune.v1 import retrieval_pb2 as pb
from ragtune.v1 import retrieval_pb2_grpc

pytestmark = pytest.mark.integration

DIMS = 16


def unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=DIMS)
    return (v / np.linalg.norm(v)).tolist()


def replicas_serving(metrics_url: str, rpc: str) -> set[str]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return {
        s.labels.get("replica", "")
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ray_ragtune_rpc_requests_total"
        and s.labels.get("application") == "freshness"
        and s.labels.get("rpc") == rpc
        and s.value > 0
    }


def test_every_write_is_visible_on_the_next_search_from_either_replica(platform):
    with grpc.insecure_channel(platform.target) as channel:
        stub = retrieval_pb2_grpc.RetrievalStub(channel)
        stub.CreateCollection(
            pb.CreateCollectionRequest(tenant="acme", name="live", dims=DIMS,
                                       embedding_model="m", exist_ok=True),
            metadata=platform.internal("freshness"),
        )  # fmt: skip
        visible_after = []
        for n in range(60):
            start = time.perf_counter()
            written = stub.Upsert(
                pb.UpsertRequest(tenant="acme", collection="live", chunks=[
                    pb.Chunk(chunk_id=f"n{n}#0", doc_id=f"n{n}", text=f"note {n}", vector=unit(n))
                ]),
                metadata=platform.internal("freshness"),
            )  # fmt: skip
            found = stub.Search(
                pb.SearchRequest(tenant="acme", collection="live", query_vector=unit(n), top_k=1,
                                 min_seq=written.seq),
                metadata=platform.internal("freshness"),
            )  # fmt: skip
            visible_after.append(time.perf_counter() - start)
            assert found.hits[0].chunk.doc_id == f"n{n}", n  # found on every search
            assert found.applied_seq >= written.seq
    p99 = float(np.quantile(visible_after, 0.99))
    print(
        f"upsert-to-visible p50 {np.median(visible_after) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    assert p99 < 1.0
    # Some searches were answered by a replica that had not taken the write: the reads above
    # crossed replicas. (Serve's proxy spreads calls at random; HAProxy alternates, so every
    # Upsert lands on one replica and every Search on the other.)
    deadline = time.monotonic() + 30
    while True:
        searched = replicas_serving(platform.metrics_url, "Search")
        wrote = replicas_serving(platform.metrics_url, "Upsert")
        if any(s != w for s in searched for w in wrote):
            break
        assert time.monotonic() < deadline, f"searches on {searched}, writes on {wrote}"
        time.sleep(1)
