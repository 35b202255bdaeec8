"""IR metrics with pytrec_eval, the reference TREC implementation that BEIR reports with."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ragtune.common.fusion import reciprocal_rank_fusion

Run = Mapping[str, Mapping[str, float]]  # query id -> doc id -> score


def evaluate(run: Run, qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Mean nDCG@10 and Recall@100 over every judged query (a query with no results scores 0)."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(dict(qrels), {"ndcg_cut.10", "recall.100"})
    per_query = evaluator.evaluate(
        {q: {d: float(s) for d, s in run.get(q, {}).items()} for q in qrels}
    )
    return {
        "nDCG@10": float(np.mean([per_query.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels])),
        "Recall@100": float(np.mean([per_query.get(q, {}).get("recall_100", 0.0) for q in qrels])),
    }


def fuse_runs(runs: list[Run], weights: list[float]) -> dict[str, dict[str, float]]:
    """Per query, reciprocal-rank fusion of each run's ranking (scores sorted descending)."""
    queries = sorted({q for run in runs for q in run})
    return {
        q: reciprocal_rank_fusion(
            [sorted(run.get(q, {}), key=run.get(q, {}).get, reverse=True) for run in runs], weights
        )
        for q in queries
    }
