"""Rerank service vs raw sentence-transformers CrossEncoder, same pairs, same run.

The service receives concurrent Rerank calls (one query, ``--passages`` candidates each)
through Serve's gRPC proxy; the raw side is ``CrossEncoder.predict(pairs, batch_size=32)``.
Without ``--model``, a MiniLM-L6 cross-encoder is built from the shipped MiniLM weights: its
scores mean nothing, but its cost is that of ms-marco-MiniLM-L6, the usual CPU reranker.

    python -m load_tests.bench_rerank [--queries 64] [--passages 20] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from load_tests.bench_common import (
    add_out_dir,
    drive,
    internal_metadata,
    percentiles,
    serve_app,
    texts,
    write_result,
)
from ragtune.common.services import RERANK
from ragtune.local import use_process_env


def minilm_cross_encoder(out: Path) -> str:
    from sentence_transformers import CrossEncoder

    from ragtune.common.models import default_minilm_path

    CrossEncoder(default_minilm_path(), num_labels=1).save_pretrained(str(out))
    return str(out)


def raw_throughput(model_path: str, pairs: list[tuple[str, str]]) -> float:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(model_path, device="cpu")
    model.predict(pairs[:32], batch_size=32)  # warm-up
    start = time.perf_counter()
    model.predict(pairs, batch_size=32, show_progress_bar=False)
    return len(pairs) / (time.perf_counter() - start)


async def service_run(target: str, queries: list[str], passages: list[str], concurrency: int):
    import grpc

    from ragtune.v1 import rerank_pb2, rerank_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = rerank_pb2_grpc.RerankStub(channel)
        metadata = internal_metadata(RERANK.name)

        def call(query: str):
            request = rerank_pb2.RerankRequest(query=query, passages=passages)
            return lambda: stub.Rerank(request, metadata=metadata)

        await drive([call(q) for q in queries[:4]], concurrency)  # warm-up
        return await drive([call(q) for q in queries], concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="local CrossEncoder directory (default: MiniLM-L6 shape)")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--passages", type=int, default=20, help="candidates per query")
    parser.add_argument("--concurrency", type=int, default=32)
    add_out_dir(parser)
    args = parser.parse_args()
    use_process_env(local_ray=True)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or minilm_cross_encoder(Path(tmp) / "minilm-cross-encoder")
        queries, passages = texts("queries", args.queries), texts("passages", args.passages)
        pairs = [(q, p) for q in queries for p in passages]
        raw = raw_throughput(model, pairs)
        print(f"raw predict(batch_size=32): {raw:.1f} pairs/s", flush=True)
        with serve_app(RERANK, {"kind": "cross-encoder", "model_path": model}) as target:
            seconds, latencies = asyncio.run(
                service_run(target, queries, passages, args.concurrency)
            )
    service = len(pairs) / seconds
    result = {
        "benchmark": "rerank",
        "model": args.model or "MiniLM-L6 cross-encoder (untrained head)",
        "queries": len(queries),
        "passages_per_query": len(passages),
        "concurrency": args.concurrency,
        "raw_pairs_per_s": raw,
        "service_pairs_per_s": service,
        "service_latency": percentiles(latencies),
        "ratio": service / raw,
    }
    path = write_result("bench-rerank", result, args.out_dir)
    print(
        f"service ({args.concurrency} concurrent Rerank calls of {len(passages)} passages): "
        f"{service:.1f} pairs/s, p50 {result['service_latency']['p50_ms']:.0f} ms; JSON: {path}"
    )
    print(f"rerank service/raw throughput ratio: {service / raw:.2f}")


if __name__ == "__main__":
    main()
