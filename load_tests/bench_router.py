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
from ragtune.gateway.cues import CueIndex, TopicScores, apply_cues, example_texts, question_parts
from ragtune.gateway.policy import DefaultPolicy
from ragtune.gateway.routing import AdapterCard, RouteRequest
from ragtune.resources import ROUTING_DIR, ROUTING_PYREF_DIR

SETS = {"scifact": (ROUTING_DIR, SCIFACT), "pyref": (ROUTING_PYREF_DIR, ROUTING_PYREF_DIR)}


def bench_decisions(repeat: int, adapters_dir: Path, cache: Path) -> dict:
    config = RouterConfig()
    policy = DefaultPolicy(config)
    cards = routing.adapter_cards(adapters_dir)
    latencies: list[float] = []
    for name, (folder, corpus) in SETS.items():
        items = routing_set.read(folder / "requests.jsonl", "test")
        settings = routing.RoutingSettings(corpus, adapters_dir, cache_dir=cache, collection=name)
        # The embedding call and the searches (the probe's, and a cue part's topic search),
        # done beforehand as the evaluation does them.
        prepared = routing.prepare(items, config, settings)
        asyncio.run(_time_decisions(repeat, name, items, prepared, policy, cards, latencies))
    return {"decisions": len(latencies), **percentiles(latencies)}


async def _time_decisions(
    repeat: int,
    name: str,
    items: list[dict],
    prepared: routing.Prepared,
    policy: DefaultPolicy,
    cards: dict[str, AdapterCard],
    latencies: list[float],
) -> None:
    for _ in range(repeat):
        for item, vectors, evidence, seen in zip(
            items, prepared.vectors, prepared.evidence, prepared.requests, strict=True
        ):
            topic = _known_topics(seen)
            start = time.perf_counter()
            question_parts(item["question"])
            request = routing._request(policy, item, cards, name)
            request, _ = await apply_cues(policy, request, prepared.index, vectors, topic=topic)
            policy.decide(request, evidence)
            latencies.append(time.perf_counter() - start)


def _known_topics(request: RouteRequest) -> TopicScores:
    """The topic searches' scores the evaluation found for ``request``'s cue parts."""
    known = {c.part: c.topic_similarity for c in request.cues if c.topic_similarity is not None}

    async def scores(parts: list[int]) -> list[float | None]:
        return [known.get(n) for n in parts]

    return scores


async def _probe(items: list[dict], adapters_dir: Path, cache: Path) -> dict:
    from ragtune.embedding.config import EmbeddingConfig
    from ragtune.embedding.service import EmbeddingService
    from ragtune.retrieval.config import RetrievalConfig
    from ragtune.retrieval.service import RetrievalService
    from ragtune.v1 import embedding_pb2, retrieval_pb2

    corpus = beir.load(SCIFACT, "test")
    vectors = _corpus_vectors(corpus.doc_texts, _embedder(), EvalSettings(cache_dir=cache))
    embedding = EmbeddingService(EmbeddingConfig())
    embedding.warm_up()

    async def embed(texts: list[str]) -> tuple[np.ndarray, float]:
        got = await embedding.Embed(
            embedding_pb2.EmbedRequest(texts=texts, input_type=embedding_pb2.INPUT_TYPE_QUERY)
        )
        return np.asarray([v.values for v in got.vectors], dtype=np.float32), got.busy_ms

    policy = DefaultPolicy(RouterConfig())
    cards = routing.adapter_cards(adapters_dir)
    texts = example_texts(cards.values())
    index = CueIndex(list(cards.values()), dict(zip(texts, (await embed(texts))[0], strict=True)))
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

        async def search(vector: np.ndarray, k: int) -> retrieval_pb2.SearchResponse:
            return await retrieval.Search(
                retrieval_pb2.SearchRequest(
                    tenant="bench",
                    collection="scifact",
                    query_vector=vector.tolist(),
                    top_k=k,
                    mode=retrieval_pb2.SEARCH_MODE_DENSE,
                )
            )

        latencies, costs, topic_searches = [], [], 0
        probe_k = RouterConfig().probe.top_k
        for item in items:
            request = routing._request(policy, item, cards, "scifact")
            start = time.perf_counter()
            question = item["question"]
            parts = [] if request.need.explicit else question_parts(question)
            embedded, busy_ms = await embed([question, *parts])  # the only embedding call
            vector = embedded[0]
            if parts:  # the cues, with a topic search of a part about to pick an adapter

                async def topic(picked: list[int], embedded: np.ndarray = embedded) -> list:
                    nonlocal busy_ms, topic_searches
                    found = await asyncio.gather(*(search(embedded[n], 1) for n in picked))
                    busy_ms += sum(f.busy_ms for f in found)
                    topic_searches += len(picked)
                    return [f.hits[0].score if f.hits else None for f in found]

                request, vector = await apply_cues(policy, request, index, embedded, topic=topic)
            found = await search(vector, probe_k)
            latencies.append(time.perf_counter() - start)
            busy_ms += found.busy_ms  # priced like the gateway prices stages
            costs.append(busy_ms / 3_600_000 * Pricing().workers["cpu"].usd_per_hour)
    return {
        "probes": len(latencies),
        "corpus_chunks": len(vectors),
        "topic_searches": topic_searches,
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
    probe = asyncio.run(_probe(items[: args.probes], adapters, cache))
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
        f"probe (embed + search of {probe['corpus_chunks']} chunks, {probe['topic_searches']} "
        f"topic searches of cue parts): p50 {probe['p50_ms']:.1f} ms, "
        f"p99 {probe['p99_ms']:.1f} ms, {probe['mean_cost_micro_usd']:.3f} micro-USD each"
    )
    print(f"probe/decision time ratio: {result['probe_over_decision_p50']:.0f} (JSON: {path})")
    print(f"route decision p99 ms: {decision['p99_ms']:.4f}")


if __name__ == "__main__":
    main()
