"""Embedding service vs raw sentence-transformers, same texts, same run.

The service receives N concurrent single-text Embed calls over gRPC (dynamic batching joins
them) on the gRPC port (``--ingress``: Serve's HAProxy ingress, as ``ragtune serve`` runs, or
Serve's Python proxy), or straight to the replica's own gRPC server (``--ingress direct``). The
raw side is ``model.encode(texts,
batch_size=64)`` in this process. The two alternate for ``--rounds`` rounds, so a slow spell of
the machine hits both; the headline is the median of the rounds' ratios. Prints it on its last
line and writes JSON.

    python -m load_tests.bench_embed [--n 512] [--concurrency 32] [--kind passages|queries]
                                     [--ingress haproxy|proxy|direct] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from load_tests.bench_common import (
    add_ingress,
    add_out_dir,
    drive,
    internal_metadata,
    percentiles,
    serve_app,
    texts,
    write_result,
)
from ragtune.common.services import EMBEDDING
from ragtune.local import use_process_env


class RawEncoder:
    """``SentenceTransformer.encode(batch_size=64)`` on the service's default model."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        from ragtune.common.models import default_minilm_path

        self.model = SentenceTransformer(default_minilm_path(), device="cpu")
        self.model.encode(["warm-up"] * 64, batch_size=64)

    def throughput(self, batch: list[str]) -> float:
        start = time.perf_counter()
        self.model.encode(batch, batch_size=64, normalize_embeddings=True)
        return len(batch) / (time.perf_counter() - start)


async def service_run(target: str, batch: list[str], concurrency: int) -> tuple[float, list[float]]:
    import grpc

    from ragtune.v1 import embedding_pb2, embedding_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = embedding_pb2_grpc.EmbeddingStub(channel)
        metadata = internal_metadata(EMBEDDING.name)

        def call(text: str):
            return lambda: stub.Embed(embedding_pb2.EmbedRequest(texts=[text]), metadata=metadata)

        await drive([call(t) for t in batch[: concurrency * 2]], concurrency)  # warm-up
        return await drive([call(t) for t in batch], concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="texts embedded per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kind", choices=["passages", "queries"], default="passages")
    add_ingress(parser)
    parser.add_argument("--rounds", type=int, default=3, help="raw/service rounds (median)")
    add_out_dir(parser)
    args = parser.parse_args()
    use_process_env(local_ray=True)

    batch = texts(args.kind, args.n)
    raw_encoder = RawEncoder()
    rounds = []
    with serve_app(EMBEDDING, {}, ingress=args.ingress) as target:
        for r in range(args.rounds):
            raw = raw_encoder.throughput(batch)
            seconds, latencies = asyncio.run(service_run(target, batch, args.concurrency))
            service = len(batch) / seconds
            rounds.append({"raw_texts_per_s": raw, "service_texts_per_s": service,
                           "service_latency": percentiles(latencies), "ratio": service / raw})  # fmt: skip
            print(f"round {r + 1}: raw encode(batch_size=64) {raw:.1f} texts/s; service "
                  f"({args.concurrency} concurrent single-text calls, {args.ingress}) "
                  f"{service:.1f} texts/s, p50 {rounds[-1]['service_latency']['p50_ms']:.0f} ms; "
                  f"ratio {service / raw:.2f}", flush=True)  # fmt: skip
    ratio = statistics.median(r["ratio"] for r in rounds)
    result = {"benchmark": "embed", "texts": len(batch), "kind": args.kind,
              "concurrency": args.concurrency, "ingress": args.ingress, "rounds": rounds,
              "ratio": ratio}  # fmt: skip
    path = write_result(f"bench-embed-{args.kind}-{args.ingress}", result, args.out_dir)
    print(f"JSON: {path}")
    print(f"embed service/raw throughput ratio (median of {args.rounds}): {ratio:.2f}")


if __name__ == "__main__":
    main()
