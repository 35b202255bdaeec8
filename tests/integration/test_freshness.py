"""Read-your-writes across replicas: two retrieval replicas, each write searched with the seq it
returned, through Serve's gRPC proxy."""

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
METADATA = [("application", "freshness")]


def unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=DIMS)
    return (v / np.linalg.norm(v)).tolist()


def replicas_that_searched(metrics_url: str) -> set[str]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return {
        s.labels.get("replica", "")
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ray_ragtune_rpc_requests_total"
        and s.labels.get("application") == "freshness"
        and s.labels.get("rpc") == "Search"
        and s.value > 0
    }


def test_every_write_is_visible_on_the_next_search_from_either_replica(platform):
    with grpc.insecure_channel(platform.target) as channel:
        stub = retrieval_pb2_grpc.RetrievalStub(channel)
        stub.CreateCollection(
            pb.CreateCollectionRequest(tenant="acme", name="live", dims=DIMS,
                                       embedding_model="m", exist_ok=True),
            metadata=METADATA,
        )  # fmt: skip
        visible_after = []
        for n in range(60):
            start = time.perf_counter()
            written = stub.Upsert(
                pb.UpsertRequest(tenant="acme", collection="live", chunks=[
                    pb.Chunk(chunk_id=f"n{n}#0", doc_id=f"n{n}", text=f"note {n}", vector=unit(n))
                ]),
                metadata=METADATA,
            )  # fmt: skip
            found = stub.Search(
                pb.SearchRequest(tenant="acme", collection="live", query_vector=unit(n), top_k=1,
                                 min_seq=written.seq),
                metadata=METADATA,
            )  # fmt: skip
            visible_after.append(time.perf_counter() - start)
            assert found.hits[0].chunk.doc_id == f"n{n}", n  # found on every search
            assert found.applied_seq >= written.seq
    p99 = float(np.quantile(visible_after, 0.99))
    print(
        f"upsert-to-visible p50 {np.median(visible_after) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    assert p99 < 1.0
    # Both replicas answered searches (Serve spreads requests over them).
    deadline = time.monotonic() + 30
    while len(replicas := replicas_that_searched(platform.metrics_url)) < 2:
        assert time.monotonic() < deadline, f"searches reached only {replicas}"
        time.sleep(1)
