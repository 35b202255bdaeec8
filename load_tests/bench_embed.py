"""Embedding service vs raw sentence-transformers, same texts, same run.

The service receives N concurrent single-text Embed calls through Serve's gRPC proxy (dynamic
batching joins them); the raw side is ``model.encode(texts, batch_size=64)`` in this process.
Prints the throughput ratio service/raw on its last line and writes JSON.

    python -m load_tests.bench_embed [--n 512] [--concurrency 32] [--kind passages|queries]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from load_tests.bench_common import drive, percentiles, serve_app, texts, write_result


def raw_throughput(batch: list[str]) -> float:
    from sentence_transformers import SentenceTransformer

    from ragtune.embedding.backend import default_minilm_path

    model = SentenceTransformer(default_minilm_path(), device="cpu")
    model.encode(batch[:64], batch_size=64)  # warm-up
    start = time.perf_counter()
    model.encode(batch, batch_size=64, normalize_embeddings=True)
    return len(batch) / (time.perf_counter() - start)


async def service_run(target: str, batch: list[str], concurrency: int) -> tuple[float, list[float]]:
    import grpc

    from ragtune.v1 import embedding_pb2, embedding_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = embedding_pb2_grpc.EmbeddingStub(channel)
        metadata = [("application", "embedding")]

        def call(text: str):
            return lambda: stub.Embed(embedding_pb2.EmbedRequest(texts=[text]), metadata=metadata)

        await drive([call(t) for t in batch[: concurrency * 2]], concurrency)  # warm-up
        return await drive([call(t) for t in batch], concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="texts embedded (default 512)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kind", choices=["passages", "queries"], default="passages")
    parser.add_argument("--out", default="results", help="folder for the JSON result")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    batch = texts(args.kind, args.n)
    raw = raw_throughput(batch)
    print(f"raw encode(batch_size=64): {raw:.1f} texts/s", flush=True)
    with serve_app("embedding", "Embedding", {}) as target:
        seconds, latencies = asyncio.run(service_run(target, batch, args.concurrency))
    service = len(batch) / seconds
    result = {
        "benchmark": "embed",
        "texts": len(batch),
        "kind": args.kind,
        "concurrency": args.concurrency,
        "raw_texts_per_s": raw,
        "service_texts_per_s": service,
        "service_latency": percentiles(latencies),
        "ratio": service / raw,
    }
    path = write_result(f"bench-embed-{args.kind}", result, Path(args.out))
    print(
        f"service ({args.concurrency} concurrent single-text gRPC calls): {service:.1f} texts/s, "
        f"p50 {result['service_latency']['p50_ms']:.0f} ms, "
        f"p99 {result['service_latency']['p99_ms']:.0f} ms; JSON: {path}"
    )
    print(f"embed service/raw throughput ratio: {service / raw:.2f}")


if __name__ == "__main__":
    main()
