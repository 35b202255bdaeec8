"""Retrieval service vs raw FAISS on the same vectors, same run; ANN recall against exact search.

The collection is a clustered synthetic set (``--n`` unit vectors of 384 dims with the low
intrinsic dimension of text embeddings, seeded; see ``clustered``), written straight to the
service's database. Then:

- **raw FAISS**: the same kind of index over the same vectors, searched in this process: one
  query per call at concurrency 1, and 32 queries per call at concurrency 32 (queries that
  arrive together are batched, as the service batches them);
- **service**: single-query ``Search`` calls on the gRPC port (``--ingress``: Serve's HAProxy
  ingress, as ``ragtune serve`` runs, or Serve's Python proxy) or straight to the replica's own
  gRPC server (``--ingress direct``), 1 or 32 in flight;
- **recall@10** of each ANN index type against exact search, through the service.

Both sides use the same FAISS settings: the BLAS switch the service sets (see
``set_faiss_blas_threshold``) and every core's thread (the service is told ``faiss_threads``,
since a replica with a fractional CPU would otherwise search on one). Writes JSON and prints
the concurrency-32 service/raw throughput ratio last.

    python -m load_tests.bench_retrieval [--n 200000] [--queries 512] [--types flat,hnsw,ivf_pq]
                                         [--ingress haproxy|proxy|direct]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time

import numpy as np

from load_tests.bench_common import (
    add_ingress,
    add_out_dir,
    drive,
    internal_metadata,
    percentiles,
    serve_app,
    write_result,
)
from ragtune.common.services import RETRIEVAL

DIMS = 384


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors with the low intrinsic dimension of real text embeddings: 2,000 clusters
    in a 48-dimensional latent space, projected to 384 dims, plus a little isotropic noise."""
    structure = np.random.default_rng(1234)  # the same space for corpus and queries
    centres = structure.normal(size=(2000, 48)).astype(np.float32)
    projection = structure.normal(size=(48, DIMS)).astype(np.float32)
    rng = np.random.default_rng(seed)
    latent = centres[rng.integers(0, 2000, n)] + 0.5 * rng.normal(size=(n, 48)).astype(np.float32)
    vectors = latent @ projection + 0.5 * rng.normal(size=(n, DIMS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def load_collection(url: str, name: str, index_type: str, vectors: np.ndarray) -> None:
    from ragtune.retrieval.store import CollectionRow, NewChunk, Store

    store = Store(url)
    row, _ = store.create_collection(
        CollectionRow(0, "bench", name, DIMS, "synthetic", "ip", index_type, False),
        exist_ok=True,
    )
    for start in range(0, len(vectors), 20_000):
        part = vectors[start : start + 20_000]
        store.upsert(
            row,
            [
                NewChunk(f"d{start + i}", f"d{start + i}#0", f"vector {start + i}", {}, v)
                for i, v in enumerate(part)
            ],  # fmt: skip
        )
    store.engine.dispose()


def raw_index(vectors: np.ndarray):
    import faiss

    from ragtune.common.threads import cores, set_faiss_blas_threshold

    set_faiss_blas_threshold(cores())  # what the service sets: the same FAISS on both sides
    index = faiss.IndexFlatIP(DIMS)
    index.add(vectors)
    return index


def raw_faiss(index, queries: np.ndarray, concurrency: int) -> dict:
    latencies = []
    start = time.perf_counter()
    for i in range(0, len(queries), concurrency):
        t = time.perf_counter()
        index.search(queries[i : i + concurrency], 10)
        latencies += [time.perf_counter() - t] * len(queries[i : i + concurrency])
    seconds = time.perf_counter() - start
    return {"qps": len(queries) / seconds, **percentiles(latencies)}


async def service_run(target: str, name: str, queries: np.ndarray, concurrency: int):
    import grpc

    from ragtune.v1 import retrieval_pb2, retrieval_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = retrieval_pb2_grpc.RetrievalStub(channel)
        metadata = internal_metadata(RETRIEVAL.name)
        results: dict[int, list[str]] = {}

        def call(n: int):
            async def go():
                reply = await stub.Search(
                    retrieval_pb2.SearchRequest(
                        tenant="bench", collection=name, query_vector=queries[n].tolist(),
                        top_k=10,
                    ),
                    metadata=metadata, timeout=300,
                )  # fmt: skip
                results[n] = [h.chunk.doc_id for h in reply.hits]

            return go

        await drive([call(n) for n in range(min(64, len(queries)))], concurrency)  # warm-up
        seconds, latencies = await drive([call(n) for n in range(len(queries))], concurrency)
        return {"qps": len(queries) / seconds, **percentiles(latencies)}, results


def main() -> None:
    from ragtune.common.threads import cores

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument("--types", default="flat,hnsw,ivf_pq")
    add_ingress(parser)
    add_out_dir(parser)
    args = parser.parse_args()
    vectors = clustered(args.n, seed=0)
    queries = clustered(args.queries, seed=1)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    truth = [{f"d{i}" for i in row} for row in exact]
    types = args.types.split(",")
    result: dict = {"vectors": args.n, "dims": DIMS, "queries": args.queries, "set": "clustered",
                    "ingress": args.ingress}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        for index_type in types:
            load_collection(url, index_type.replace("_", "-"), index_type, vectors)
        print(f"loaded {args.n} vectors into {len(types)} collections", flush=True)
        index = raw_index(vectors)
        with serve_app(
            RETRIEVAL,
            {"database_url": url, "faiss_threads": cores()},
            ingress=args.ingress,
        ) as target:
            for index_type in types:
                name = index_type.replace("_", "-")
                for c in (1, 32) if index_type == "flat" else (32,):
                    if index_type == "flat":  # just before, so a slow spell hits both alike
                        result[f"raw_c{c}"] = raw_faiss(index, queries, c)
                    stats, found = asyncio.run(service_run(target, name, queries, c))
                    recall = float(np.mean([len(set(found[n]) & truth[n]) / 10
                                            for n in range(len(queries))]))  # fmt: skip
                    result[f"service_{index_type}_c{c}"] = {**stats, "recall_at_10": recall}
                    print(f"{index_type} c={c}: {stats['qps']:.0f} q/s, p50 {stats['p50_ms']:.1f} "
                          f"ms, p99 {stats['p99_ms']:.1f} ms, recall@10 {recall:.3f}", flush=True)  # fmt: skip
    if "flat" not in types:
        sys.exit("the service/raw ratio needs the flat collection: add flat to --types")
    for c in (1, 32):
        raw = result[f"raw_c{c}"]
        result[f"ratio_flat_c{c}"] = result[f"service_flat_c{c}"]["qps"] / raw["qps"]
        print(f"raw FAISS flat c={c}: {raw['qps']:.0f} q/s; "
              f"service/raw {result[f'ratio_flat_c{c}']:.2f}")  # fmt: skip
    suffix = "" if args.ingress == "haproxy" else f"-{args.ingress}"
    path = write_result(f"bench-retrieval{suffix}", result, args.out_dir)
    print(f"(JSON: {path})")
    print(f"retrieval service/raw throughput ratio: {result['ratio_flat_c32']:.2f}")


if __name__ == "__main__":
    main()
