"""Router cost: the decision alone, and the retrieval probe that informs it.

- **Decision**: the router's own work per request, over both labelled routing sets: reading
  the request's needs, splitting the question into parts, matching the parts' vectors with
  the adapters' example requests, taking the instruction out of the probe's vector, and
  ``DefaultPolicy.decide`` with the collection's calibrated threshold. The embedding call and
  the search are computed beforehand: they are the probe, measured next.
- **Probe**: what the gateway runs before an AUTO decision: one ``Embed`` on the embedding
  service (the question and its parts in one call) and ``Search`` on the retrieval service
  (the real service classes, in-process, no Serve hops) over the SciFact corpus, one request
  at a time. Its cost in micro-USD is its busy time at the default CPU price. On retrieving
  paths these hits are reused, so the probe is extra work only when the router picks TUNED.

    python -m load_tests.bench_router [--repeat 20] [--probes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from load_tests.bench_common import REPO, SCIFACT, add_out_dir, percentiles, write_result
from ragtune.common.cost import Pricing
from ragtune.evaluation import beir, routing, routing_set
from ragtune.evaluation.retrieval import EvalSettings, _corpus_vectors, _embedder
from ragtune.gateway.config import RouterConfig
from ragtune.gateway.cues import apply_cues, question_parts
from ragtune.gateway.policy import DefaultPolicy
from ragtune.resources import ROUTING_DIR, ROUTING_PYREF_DIR

SETS = {"scifact": (ROUTING_DIR, SCIFACT), "pyref": (ROUTING_PYREF_DIR, ROUTING_PYREF_DIR)}


def bench_decisions(repeat: int, adapters_dir: Path, cache: Path) -> dict:
    config = RouterConfig()
    policy = DefaultPolicy(config)
    cards = routing.adapter_cards(adapters_dir)
    latencies = []
    for name, (folder, corpus) in SETS.items():
        items = routing_set.read(folder / "requests.jsonl", "test")
        settings = routing.RoutingSettings(corpus, adapters_dir, cache_dir=cache, collection=name)
        # The embedding call and the search, done beforehand as the evaluation does them.
        prepared = routing.prepare(items, config, settings)
        for _ in range(repeat):
            for item, vectors, evidence in zip(
                items, prepared.vectors, prepared.evidence, strict=True
            ):
                start = time.perf_counter()
                question_parts(item["question"])
                request = routing._request(policy, item, cards, name)
                request, _ = apply_cues(policy, request, prepared.index, vectors)
                policy.decide(request, evidence)
                latencies.append(time.perf_counter() - start)
    return {"decisions": len(latencies), **percentiles(latencies)}


async def _probe(questions: list[str], cache: Path) -> dict:
    from ragtune.embedding.config import EmbeddingConfig
    from ragtune.embedding.service import EmbeddingService
    from ragtune.retrieval.config import RetrievalConfig
    from ragtune.retrieval.service import RetrievalService
    from ragtune.v1 import embedding_pb2, retrieval_pb2

    corpus = beir.load(SCIFACT, "test")
    vectors = _corpus_vectors(corpus.doc_texts, _embedder(), EvalSettings(cache_dir=cache))
    embedding = EmbeddingService(EmbeddingConfig())
    embedding.warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        retrieval = RetrievalService(RetrievalConfig(database_url=f"sqlite:///{tmp}/bench.db"))
        await retrieval.CreateCollection(
            retrieval_pb2.CreateCollectionRequest(
                tenant="bench", name="scifact", dims=vectors.shape[1], embedding_model="m"
            )
        )
        for start in range(0, len(vectors), 1000):
            chunks = [
                retrieval_pb2.Chunk(
                    chunk_id=f"{doc}#0", doc_id=doc, text=text[:2000], vector=vector.tolist()
                )
                for doc, text, vector in zip(
                    corpus.doc_ids[start : start + 1000],
                    corpus.doc_texts[start : start + 1000],
                    vectors[start : start + 1000],
                    strict=True,
                )
            ]
            await retrieval.Upsert(
                retrieval_pb2.UpsertRequest(tenant="bench", collection="scifact", chunks=chunks)
            )
        latencies, costs = [], []
        probe_k = RouterConfig().probe.top_k
        for question in questions:
            start = time.perf_counter()
            query = await embedding.Embed(  # the only embedding call: question and parts
                embedding_pb2.EmbedRequest(
                    texts=[question, *question_parts(question)],
                    input_type=embedding_pb2.INPUT_TYPE_QUERY,
                )
            )
            found = await retrieval.Search(
                retrieval_pb2.SearchRequest(
                    tenant="bench",
                    collection="scifact",
                    query_vector=query.vectors[0].values,
                    top_k=probe_k,
                )
            )
            latencies.append(time.perf_counter() - start)
            busy_ms = query.busy_ms + found.busy_ms  # priced like the gateway prices stages
            costs.append(busy_ms / 3_600_000 * Pricing().workers["cpu"].usd_per_hour)
    return {
        "probes": len(latencies),
        "corpus_chunks": len(vectors),
        **percentiles(latencies),
        "mean_cost_micro_usd": float(np.mean(costs) * 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="passes over the routing set")
    parser.add_argument("--probes", type=int, default=200)
    add_out_dir(parser)
    args = parser.parse_args()
    cache = REPO / "data" / "cache"
    adapters = REPO / "data" / "devmodel" / "adapters"
    decision = bench_decisions(args.repeat, adapters, cache)
    items = routing_set.read(ROUTING_DIR / "requests.jsonl")
    questions = [i["question"] for i in items][: args.probes]
    probe = asyncio.run(_probe(questions, cache))
    result = {
        "decision": decision,
        "probe": probe,
        "probe_over_decision_p50": probe["p50_ms"] / decision["p50_ms"],
    }
    path = write_result("bench-router", result, args.out_dir)
    print(
        f"decision: p50 {decision['p50_ms']:.4f} ms, p99 {decision['p99_ms']:.4f} ms "
        f"({decision['decisions']} decisions)"
    )
    print(
        f"probe (embed + search of {probe['corpus_chunks']} chunks): p50 {probe['p50_ms']:.1f} ms, "
        f"p99 {probe['p99_ms']:.1f} ms, {probe['mean_cost_micro_usd']:.3f} micro-USD each"
    )
    print(f"probe/decision time ratio: {result['probe_over_decision_p50']:.0f} (JSON: {path})")
    print(f"route decision p99 ms: {decision['p99_ms']:.4f}")


if __name__ == "__main__":
    main()
