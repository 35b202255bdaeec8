"""Reciprocal-rank fusion (Cormack et al., 2009): combine rankings without calibrating scores."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

RRF_K = 60  # the constant from the paper; damps the weight of the very first ranks


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]], weights: Sequence[float], k: int = RRF_K
) -> dict[K, float]:
    """score(x) = sum over rankings of weight / (k + rank of x), ranks counted from 1."""
    if len(rankings) != len(weights):
        raise ValueError("one weight per ranking")
    fused: dict[K, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
    return fused
