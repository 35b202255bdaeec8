"""`ragtune eval retrieval`: nDCG@10 and Recall@100 of dense, lexical and hybrid retrieval on a
BEIR dataset, optionally reranked by the rerank service's cross-encoder.

Dense retrieval uses the embedding backend and exact inner product (what the retrieval service
runs); lexical is BM25 (bm25s, English stopwords, Snowball stemming); hybrid is reciprocal-rank
fusion of the two. Corpus embeddings are cached, keyed by model and corpus content.

Scored as BEIR scores (``EvaluateRetrieval.evaluate(..., ignore_identical_ids=True)``): where a
query id is also a corpus document id (ArguAna, Quora, CQADupStack), that document is left out
of the query's own rankings, so a query does not find itself. Each first stage fetches one extra
candidate in that case, so a ranking keeps ``DEPTH`` hits after the drop.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ragtune.evaluation import beir
from ragtune.evaluation.metrics import Run, evaluate, fuse_runs

DEPTH = 100  # candidates per query from each first stage (Recall@100 needs 100)


@dataclass(frozen=True)
class EvalSettings:
    mode: str = "hybrid"  # dense | lexical | hybrid
    split: str = "test"
    rerank: bool = False
    rerank_kind: str = "maxsim"
    rerank_model: str | None = None  # None with maxsim: the shipped MiniLM weights
    rerank_depth: int = 20
    rerank_input_weight: float | None = None  # None: the rerank config's default
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    cache_dir: Path = Path("data/cache")
    progress: bool = True
    ignore_identical_ids: bool = True  # BEIR's default: a query never retrieves itself


def _embedder():
    from ragtune.common.threads import set_torch_threads, threads_per_pass
    from ragtune.embedding.backend import SentenceTransformerEmbedder
    from ragtune.embedding.config import EmbeddingModelConfig

    embedder = SentenceTransformerEmbedder(EmbeddingModelConfig(name="all-MiniLM-L6-v2"))
    set_torch_threads(threads_per_pass(embedder.parallel))  # as the embedding service does
    embedder.warm_up()
    return embedder


def _corpus_vectors(texts: list[str], embedder, settings: EvalSettings) -> np.ndarray:
    key = hashlib.sha256(embedder.path.encode() + "\0".join(texts).encode()).hexdigest()[:16]
    cache = settings.cache_dir / f"corpus-{embedder.name}-{key}.npy"
    if cache.is_file():
        return np.load(cache)
    chunks = [texts[i : i + 256] for i in range(0, len(texts), 256)]
    bar = tqdm(total=len(texts), unit="doc", desc="embed corpus", disable=not settings.progress)
    parts = []
    for chunk in chunks:
        parts.append(embedder.embed(chunk))
        bar.update(len(chunk))
    bar.close()
    vectors = np.concatenate(parts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def identical_ids(data: beir.BeirSplit) -> set[str]:
    """Query ids of the split that are also corpus document ids."""
    return set(data.queries) & set(data.doc_ids)


def _depth(data: beir.BeirSplit, settings: EvalSettings) -> int:
    extra = 1 if settings.ignore_identical_ids and identical_ids(data) else 0
    return min(DEPTH + extra, len(data.doc_ids))


def drop_identical_ids(run: Run, depth: int = DEPTH) -> tuple[dict[str, dict[str, float]], int]:
    """The run without each query's own id among its hits, cut to ``depth`` hits per query;
    and how many hits were dropped (BEIR pops them the same way before scoring)."""
    out, dropped = {}, 0
    for query, scores in run.items():
        dropped += query in scores
        ranked = sorted((d for d in scores if d != query), key=scores.get, reverse=True)
        out[query] = {d: scores[d] for d in ranked[:depth]}
    return out, dropped


def dense_run(data: beir.BeirSplit, settings: EvalSettings) -> Run:
    import faiss

    embedder = _embedder()
    corpus = _corpus_vectors(data.doc_texts, embedder, settings)
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    query_ids = list(data.queries)
    scores, rows = index.search(
        embedder.embed([data.queries[q] for q in query_ids]), _depth(data, settings)
    )
    return {
        q: {data.doc_ids[r]: float(s) for s, r in zip(scores[i], rows[i], strict=True) if r >= 0}
        for i, q in enumerate(query_ids)
    }


def lexical_run(data: beir.BeirSplit, settings: EvalSettings) -> Run:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(data.doc_texts, stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    query_ids = list(data.queries)
    tokens = bm25s.tokenize(
        [data.queries[q] for q in query_ids], stopwords="en", stemmer=stemmer, show_progress=False
    )
    rows, scores = retriever.retrieve(tokens, k=_depth(data, settings), show_progress=False)
    return {
        q: {data.doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i], strict=True)}
        for i, q in enumerate(query_ids)
    }


def rerank_run(first: Run, data: beir.BeirSplit, settings: EvalSettings) -> Run:
    """Rerank the top ``rerank_depth`` of each query with the rerank service; the rest keep
    their first-stage order below them, so Recall@100 is unchanged."""
    from ragtune.rerank.config import RerankConfig
    from ragtune.rerank.service import RerankService
    from ragtune.v1 import rerank_pb2

    overrides = {}
    if settings.rerank_input_weight is not None:
        overrides["input_order_weight"] = settings.rerank_input_weight
    service = RerankService(
        RerankConfig(kind=settings.rerank_kind, model_path=settings.rerank_model, **overrides)
    )
    service.warm_up()
    texts = dict(zip(data.doc_ids, data.doc_texts, strict=True))

    async def rerank_all() -> Run:
        out: dict[str, dict[str, float]] = {}
        for query, scores in tqdm(
            first.items(), desc="rerank", unit="query", disable=not settings.progress
        ):
            ranked = sorted(scores, key=scores.get, reverse=True)
            head, tail = ranked[: settings.rerank_depth], ranked[settings.rerank_depth :]
            reply = await service.Rerank(
                rerank_pb2.RerankRequest(
                    query=data.queries[query], passages=[texts[d] for d in head]
                )
            )
            order = [head[r.index] for r in reply.results]
            # Reranked head above the tail; scores only need to encode the order.
            out[query] = {d: float(len(ranked) - i) for i, d in enumerate(order + tail)}
        return out

    return asyncio.run(rerank_all())


def run_eval(folder: Path, settings: EvalSettings) -> dict:
    start = time.perf_counter()
    data = beir.load(folder, settings.split)
    runs: dict[str, Run] = {}
    if settings.mode in ("dense", "hybrid"):
        runs["dense"] = dense_run(data, settings)
    if settings.mode in ("lexical", "hybrid"):
        runs["lexical"] = lexical_run(data, settings)
    identical = identical_ids(data)
    own_hits: dict[str, int] = {}  # rankings in which a query found its own document
    for name, run in runs.items():
        kept, own_hits[name] = drop_identical_ids(run)
        if settings.ignore_identical_ids:
            runs[name] = kept
    if settings.mode == "hybrid":
        runs["hybrid"] = fuse_runs(
            [runs["dense"], runs["lexical"]], [settings.dense_weight, settings.lexical_weight]
        )
    result = {
        "dataset": str(folder),
        "split": settings.split,
        "queries": len(data.queries),
        "documents": len(data.doc_ids),
        "mode": settings.mode,
        # BEIR's ignore_identical_ids: whether it applied, to how many queries and hits
        "identical_ids": {
            "ignored": settings.ignore_identical_ids,
            "queries": len(identical),
            "own_hits": own_hits,
        },
        "metrics": {name: evaluate(run, data.qrels) for name, run in runs.items()},
    }
    final = runs[settings.mode]
    if settings.rerank:
        final = rerank_run(final, data, settings)
        result["rerank"] = {
            "kind": settings.rerank_kind,
            "input_order_weight": settings.rerank_input_weight,
            "model": settings.rerank_model or "all-MiniLM-L6-v2 (shipped)",
            "depth": settings.rerank_depth,
        }
        result["metrics"][f"{settings.mode}+rerank"] = evaluate(final, data.qrels)
    result["final"] = evaluate(final, data.qrels)
    result["seconds"] = time.perf_counter() - start
    return result
