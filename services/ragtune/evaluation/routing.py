"""`ragtune eval routing`: the router's accuracy on labelled requests, and probe calibration.

The policy under test is the gateway's own ``DefaultPolicy``; the probe it reads is computed
here in-process the way the gateway computes it (MiniLM query embedding, exact inner-product
search of the BEIR corpus, best score and margin over the top hits), so no stack is needed.
Adapter metadata comes from the adapters' own ``ragtune-adapter.yaml`` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragtune.common.errors import RagtuneError
from ragtune.evaluation import beir
from ragtune.evaluation.retrieval import EvalSettings, _corpus_vectors, _embedder
from ragtune.gateway.config import RouterConfig
from ragtune.gateway.policy import DefaultPolicy
from ragtune.gateway.routing import AdapterCard, Evidence, RouteRequest
from ragtune.v1 import common_pb2

LABELS = ["RAG", "TUNED", "HYBRID", "REFUSED"]


@dataclass(frozen=True)
class RoutingSettings:
    beir_dir: Path
    adapters_dir: Path
    split: str = "test"
    cache_dir: Path = Path("data/cache")
    progress: bool = True


def adapter_cards(adapters_dir: Path) -> dict[str, AdapterCard]:
    from ragtune.generation.adapters import read_adapter_metadata

    cards = {}
    for folder in sorted(p for p in adapters_dir.iterdir() if p.is_dir()):
        meta = read_adapter_metadata(folder)
        cards[meta["name"]] = AdapterCard(
            meta["name"], tuple(meta["tasks"]), meta["output_format"], meta["tone"]
        )
    if not cards:
        raise ValueError(f"no adapters in {adapters_dir}")
    return cards


def probe_all(questions: list[str], settings: RoutingSettings, top_k: int) -> list[Evidence]:
    """The probe's evidence for each question against the whole BEIR corpus."""
    import faiss

    corpus = beir.load(settings.beir_dir, "test")
    embedder = _embedder()
    vectors = _corpus_vectors(
        corpus.doc_texts,
        embedder,
        EvalSettings(cache_dir=settings.cache_dir, progress=settings.progress),
    )
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, ids = index.search(embedder.embed(questions), min(top_k, index.ntotal))
    evidence = []
    for row, found in zip(scores, ids, strict=True):
        row = row[found >= 0]  # FAISS pads with -1 when the corpus has fewer hits
        margin = float(row[0] - row[1:].mean()) if len(row) > 1 else 0.0
        evidence.append(Evidence(True, float(row[0]), margin, len(row)))
    return evidence


def _request(policy: DefaultPolicy, item: dict, cards: dict[str, AdapterCard]) -> RouteRequest:
    signals = item["signals"]
    return RouteRequest(
        question=item["question"],
        path=common_pb2.PATH_AUTO,
        adapter=signals.get("adapter", ""),
        collection="scifact",
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


def evaluate_routing(items: list[dict], config: RouterConfig, settings: RoutingSettings) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix

    if not items:
        raise ValueError(f"no requests in split {settings.split!r}")
    policy = DefaultPolicy(config)
    cards = adapter_cards(settings.adapters_dir)
    evidence = probe_all([i["question"] for i in items], settings, config.probe.top_k)
    predicted, mistakes = [], []
    for item, seen in zip(items, evidence, strict=True):
        try:
            route = policy.decide(_request(policy, item, cards), seen)
            got = route.path_name
        except RagtuneError as exc:
            got, route = "REFUSED", exc
        predicted.append(got)
        if got != item["expected_path"]:
            mistakes.append(
                {
                    "id": item["id"],
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
    return {
        "split": settings.split,
        "requests": len(items),
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
        "probe": config.probe.model_dump(),
        "mistakes": mistakes,
    }


def calibrate(items: list[dict], config: RouterConfig, settings: RoutingSettings) -> dict:
    """Probe thresholds that best separate answerable from unanswerable requests.

    Only requests whose label depends on the probe count (no citations or freshness flag);
    "answerable" means the request came from the corpus (a SciFact claim).
    """
    if settings.split == "test":
        raise ValueError("calibrate on the train split only: the test split stays unseen")
    use = [i for i in items if not {"require_citations", "freshness_sensitive"} & set(i["signals"])]
    labels = np.array([i["kind"].startswith("claim") for i in use])
    evidence = probe_all([i["question"] for i in use], settings, config.probe.top_k)
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
    best = (best_accuracy, float(threshold), best_margin)
    return {
        "requests": len(use),
        "train_accuracy": best[0],
        "min_top_score": round(best[1], 4),
        "min_margin": round(best[2], 4),
        "answerable_top_score_mean": float(top[labels].mean()),
        "unanswerable_top_score_mean": float(top[~labels].mean()),
    }
