"""`ragtune eval routing`: the router's accuracy on labelled requests, its cost/quality trade,
and the default probe threshold's calibration.

The router under test is the gateway's own: ``DefaultPolicy`` with the evidence computed here
in-process the way the gateway computes it. The corpus is chunked by the gateway's chunker and
embedded with MiniLM; the collection is calibrated by the gateway's own calibration code
(``gateway/calibration.py``: pseudo-queries from a sample of the chunks against the shipped
negatives), the probe is an exact inner-product search of the chunks, and the semantic cues
compare the question's parts with the adapters' example requests (``gateway/cues.py``).
Adapter metadata comes from the adapters' own ``ragtune-adapter.yaml`` files. Nothing is
fitted on the requests being scored: the collection's threshold comes from its text alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ragtune.common.errors import RagtuneError
from ragtune.evaluation.retrieval import EvalSettings, _corpus_vectors, _embedder
from ragtune.gateway.calibration import Calibration, fit, measure, pseudo_query, shipped_negatives
from ragtune.gateway.config import ChunkingConfig, RouterConfig
from ragtune.gateway.cues import (
    CueIndex,
    TopicScores,
    apply_cues,
    example_texts,
    question_parts,
)
from ragtune.gateway.policy import DefaultPolicy
from ragtune.gateway.routing import AdapterCard, Evidence, RouteRequest
from ragtune.v1 import common_pb2

LABELS = ["RAG", "TUNED", "HYBRID", "REFUSED"]
OFFSETS = (-0.1, -0.05, -0.02, 0.0, 0.02, 0.05, 0.1)  # the cost/quality curve's threshold moves


@dataclass(frozen=True)
class RoutingSettings:
    beir_dir: Path  # a folder with corpus.jsonl (BEIR layout; qrels are not needed)
    adapters_dir: Path
    split: str = "test"
    cache_dir: Path = Path("data/cache")
    progress: bool = True
    collection: str = "scifact"
    seed: int = 0  # which chunks the calibration samples


def adapter_cards(adapters_dir: Path) -> dict[str, AdapterCard]:
    from ragtune.generation.adapters import read_adapter_metadata

    cards = {}
    for folder in sorted(p for p in adapters_dir.iterdir() if p.is_dir()):
        meta = read_adapter_metadata(folder)
        cards[meta["name"]] = AdapterCard(
            meta["name"],
            tuple(meta["tasks"]),
            meta["output_format"],
            meta["tone"],
            tuple(meta.get("examples", [])),
            tuple(meta.get("counter_examples", [])),
        )
    if not cards:
        raise ValueError(f"no adapters in {adapters_dir}")
    return cards


class Collection:
    """A corpus as the gateway would hold it: chunks, their vectors, an exact index."""

    def __init__(self, settings: RoutingSettings) -> None:
        import faiss

        from ragtune.gateway.chunking import Chunker

        corpus = settings.beir_dir / "corpus.jsonl"
        if not corpus.is_file():
            raise FileNotFoundError(f"{settings.beir_dir} has no corpus.jsonl")
        chunker = Chunker(ChunkingConfig())
        self.chunk_ids: list[str] = []
        self.texts: list[str] = []
        with corpus.open() as f:
            for record in map(json.loads, f):
                title, body = record.get("title") or "", record.get("text") or ""
                text = f"# {title}\n\n{body}" if title else body  # as the gateway's Ingest
                for n, piece in enumerate(chunker.split(text)):
                    self.chunk_ids.append(f"{record['_id']}#{n}")
                    self.texts.append(piece)
        self.embedder = _embedder()
        vectors = _corpus_vectors(
            self.texts,
            self.embedder,
            EvalSettings(cache_dir=settings.cache_dir, progress=settings.progress),
        )
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed(texts) if texts else np.zeros((0, self.index.d), np.float32)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.asarray(vectors, dtype=np.float32), min(k, self.index.ntotal))

    def topic(self, vectors: np.ndarray) -> TopicScores:
        """The gateway's search of a cue's part (``cues.apply_cues``), on this collection."""

        async def scores(parts: list[int]) -> list[float | None]:
            best, _ = self.search(vectors[parts], 1)
            return [float(s) for s in best[:, 0]]

        return scores

    def calibrate(self, config: RouterConfig, seed: int = 0) -> Calibration | None:
        """What the gateway's calibration fits for this collection (its chunks sampled at
        random, as the gateway's reservoir sample would be)."""
        cal = config.calibration
        if len(self.texts) < cal.min_chunks:
            return None
        rng = random.Random(seed)
        picked = rng.sample(range(len(self.texts)), min(cal.positives, len(self.texts)))
        queries = [(self.chunk_ids[i], pseudo_query(self.texts[i], rng)) for i in picked]
        queries = [(chunk, q) for chunk, q in queries if q]

        async def embed(texts: list[str]) -> np.ndarray:
            return self.embed(texts)

        async def search(vector: np.ndarray, k: int) -> list[tuple[str, float]]:
            scores, ids = self.search(vector.reshape(1, -1), k)
            return [
                (self.chunk_ids[i], float(s))
                for s, i in zip(scores[0], ids[0], strict=True)
                if i >= 0
            ]

        negatives = self.embed(shipped_negatives())
        positive, negative = asyncio.run(measure(queries, negatives, embed, search, cal))
        if len(positive) < cal.min_chunks:
            return None
        return fit(positive, negative, cal)


def _evidence(scores: np.ndarray, fitted: Calibration | None) -> Evidence:
    row = scores[scores > -1e30]
    margin = float(row[0] - row[1:].mean()) if len(row) > 1 else 0.0
    return Evidence(
        True,
        float(row[0]),
        margin,
        len(row),
        threshold=fitted.threshold if fitted else None,
        slope=fitted.slope if fitted else 0.0,
    )


def _request(
    policy: DefaultPolicy, item: dict, cards: dict[str, AdapterCard], collection: str
) -> RouteRequest:
    signals = item["signals"]
    return RouteRequest(
        question=item["question"],
        path=common_pb2.PATH_AUTO,
        adapter=signals.get("adapter", ""),
        collection=collection,
        collection_named=False,
        need=policy.read_need(
            item["question"],
            signals.get("output_format", ""),
            signals.get("task", ""),
            signals.get("tone", ""),
        ),
        require_citations=bool(signals.get("require_citations")),
        freshness_sensitive=bool(signals.get("freshness_sensitive")),
        registered=cards,
    )


@dataclass
class Prepared:
    """Everything the decisions need, computed once: requests, evidence, cue matches."""

    requests: list[RouteRequest]
    evidence: list[Evidence]
    calibration: Calibration | None
    vectors: list[np.ndarray]  # per request: the question's vector, then its parts'
    index: CueIndex  # the adapters' example vectors


def prepare(items: list[dict], config: RouterConfig, settings: RoutingSettings) -> Prepared:
    collection = Collection(settings)
    fitted = collection.calibrate(config, settings.seed) if config.calibration.enabled else None
    policy = DefaultPolicy(config)
    cards = adapter_cards(settings.adapters_dir)
    texts = example_texts(cards.values())
    index = CueIndex(list(cards.values()), dict(zip(texts, collection.embed(texts), strict=True)))
    requests, evidence, embedded = [], [], []
    for item in items:
        request = _request(policy, item, cards, settings.collection)
        use_cues = config.semantic_cues.enabled and bool(index) and not request.need.explicit
        parts = question_parts(item["question"]) if use_cues else []
        vectors = collection.embed([item["question"], *parts])  # one call, as the gateway's
        vector = vectors[0]
        if use_cues:  # as AnswerPipeline._decide: match the cues, search without the cue
            request, vector = asyncio.run(
                apply_cues(policy, request, index, vectors, topic=collection.topic(vectors))
            )
        scores, _ = collection.search(vector.reshape(1, -1), config.probe.top_k)
        requests.append(request)
        evidence.append(_evidence(scores[0], fitted))
        embedded.append(vectors)
    return Prepared(requests, evidence, fitted, embedded, index)


def decide_all(prepared: Prepared, config: RouterConfig, offset: float = 0.0) -> list[tuple]:
    """(predicted path or REFUSED, the route or the error) per request."""
    policy = DefaultPolicy(config)
    out = []
    for request, seen in zip(prepared.requests, prepared.evidence, strict=True):
        try:
            route = policy.decide(request, replace(seen, offset=offset))
            out.append((route.path_name, route))
        except RagtuneError as exc:
            out.append(("REFUSED", exc))
    return out


def _cost(paths: list[str], config: RouterConfig) -> float:
    """Mean expected cost per request (the router's per-path priors, micro-USD)."""
    prices = config.prior_cost_micro_usd
    return float(np.mean([prices.get(p, 0) for p in paths]))


def cost_quality(items: list[dict], prepared: Prepared, config: RouterConfig) -> dict:
    """Accuracy against the share of requests sent to retrieval, for the router (and its
    threshold moved by ``OFFSETS``) and for always-RAG / always-HYBRID."""
    expected = [i["expected_path"] for i in items]
    curve = []
    for offset in OFFSETS:
        got = [p for p, _ in decide_all(prepared, config, offset)]
        curve.append(
            {
                "threshold_offset": offset,
                "accuracy": float(np.mean([g == e for g, e in zip(got, expected, strict=True)])),
                "retrieval_share": float(np.mean([g in ("RAG", "HYBRID") for g in got])),
                "cost_micro_usd_per_request": _cost(got, config),
            }
        )
    router = next(point for point in curve if point["threshold_offset"] == 0.0)
    baselines = {}
    for name in ("RAG", "HYBRID"):
        baselines[f"always_{name}"] = {
            "accuracy": float(np.mean([e == name for e in expected])),
            "retrieval_share": 1.0,
            "cost_micro_usd_per_request": _cost([name] * len(items), config),
        }
    saved = {
        name: 1 - router["cost_micro_usd_per_request"] / b["cost_micro_usd_per_request"]
        for name, b in baselines.items()
    }
    return {
        "router": router,
        "baselines": baselines,
        "cost_saved_vs": saved,
        "curve": curve,
        "prices": "router.prior_cost_micro_usd per path (the defaults before live statistics)",
    }


def evaluate_routing(items: list[dict], config: RouterConfig, settings: RoutingSettings) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix

    if not items:
        raise ValueError(f"no requests in split {settings.split!r}")
    prepared = prepare(items, config, settings)
    predicted, mistakes = [], []
    for item, seen, (got, route) in zip(
        items, prepared.evidence, decide_all(prepared, config), strict=True
    ):
        predicted.append(got)
        if got != item["expected_path"]:
            mistakes.append(
                {
                    "id": item["id"],
                    "kind": item.get("kind", ""),
                    "question": item["question"],
                    "expected": item["expected_path"],
                    "got": got,
                    "top_score": round(seen.top_score, 4),
                    "why": getattr(route, "explanation", str(route)),
                }  # fmt: skip
            )
    expected = [i["expected_path"] for i in items]
    matrix = confusion_matrix(expected, predicted, labels=LABELS)
    kinds = sorted({i["kind"] for i in items if "kind" in i})
    fitted = prepared.calibration
    return {
        "set": settings.beir_dir.name,
        "split": settings.split,
        "requests": len(items),
        "requests_digest": digest(items),
        "accuracy": float(accuracy_score(expected, predicted)),
        "labels": LABELS,
        "confusion_matrix": matrix.tolist(),  # rows: expected, columns: predicted
        "accuracy_by_kind": {
            k: float(
                np.mean(
                    [
                        p == i["expected_path"]
                        for p, i in zip(predicted, items, strict=True)
                        if i.get("kind") == k
                    ]
                )
            )  # fmt: skip
            for k in kinds
        },
        "calibration": fitted.__dict__ if fitted else None,
        "default_threshold": config.probe.min_top_score,
        "cost_quality": cost_quality(items, prepared, config),
        "mistakes": mistakes,
    }


def calibrate(items: list[dict], config: RouterConfig, settings: RoutingSettings) -> dict:
    """The default probe threshold (for collections not calibrated yet): the score that best
    separates answerable from unanswerable requests of the train split.

    Only requests whose label depends on the probe count (no citations or freshness flag);
    "answerable" means the request came from the corpus (a SciFact claim).
    """
    if settings.split == "test":
        raise ValueError("calibrate on the train split only: the test split stays unseen")
    use = [i for i in items if not {"require_citations", "freshness_sensitive"} & set(i["signals"])]
    labels = np.array([i["kind"].startswith("claim") for i in use])
    collection = Collection(settings)
    scores, _ = collection.search(collection.embed([i["question"] for i in use]), 8)
    evidence = [_evidence(row, None) for row in scores]
    top = np.array([e.top_score for e in evidence])
    margin = np.array([e.margin for e in evidence])
    ordered = np.sort(top)
    candidates = (ordered[1:] + ordered[:-1]) / 2
    best_accuracy, best_margin, best_thresholds = -1.0, 0.0, [0.0]
    for min_margin in (0.0, *np.quantile(margin, [0.05, 0.1, 0.2])):
        accuracies = [
            float(np.mean(((top >= t) & (margin >= min_margin)) == labels)) for t in candidates
        ]
        top_accuracy = max(accuracies)
        if top_accuracy > best_accuracy + 1e-9:
            best_accuracy, best_margin = top_accuracy, float(min_margin)
            best_thresholds = [t for t, a in zip(candidates, accuracies, strict=True)
                               if a >= top_accuracy - 1e-9]  # fmt: skip
    # Of the thresholds that score best, the middle one: the widest berth to both classes.
    threshold = (min(best_thresholds) + max(best_thresholds)) / 2
    return {
        "requests": len(use),
        "train_accuracy": best_accuracy,
        "min_top_score": round(float(threshold), 4),
        "min_margin": round(best_margin, 4),
        "answerable_top_score_mean": float(top[labels].mean()),
        "unanswerable_top_score_mean": float(top[~labels].mean()),
    }


def digest(items: list[dict]) -> str:
    """A short fingerprint of a request set (so results say what they were run on)."""
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:12]
