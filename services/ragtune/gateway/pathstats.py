"""Live per-path statistics the router decides budgets with: recent latency and cost."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ragtune.gateway.config import RouterConfig

PATHS = ("RAG", "TUNED", "HYBRID")


@dataclass(frozen=True)
class PathEstimate:
    latency_ms: float  # at the router's budget quantile
    cost_micro_usd: int  # mean per request
    samples: int  # 0: the estimate is the configured prior


class PathStats:
    """The last ``stats_window`` requests of each path; configured priors until a path has
    ``min_samples`` of them."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self._latency: dict[str, deque[float]] = {
            p: deque(maxlen=config.stats_window) for p in PATHS
        }
        self._cost: dict[str, deque[int]] = {p: deque(maxlen=config.stats_window) for p in PATHS}

    def observe(self, path: str, latency_ms: float, cost_micro_usd: int) -> None:
        self._latency[path].append(latency_ms)
        self._cost[path].append(cost_micro_usd)

    def estimate(self, path: str) -> PathEstimate:
        latencies = self._latency[path]
        if len(latencies) < self.config.min_samples:
            prior = self.config.prior_latency_ms[path]
            return PathEstimate(prior, self.config.prior_cost_micro_usd[path], samples=0)
        values = np.fromiter(latencies, dtype=np.float64)
        return PathEstimate(
            float(np.quantile(values, self.config.budget_quantile)),
            round(float(np.mean(self._cost[path]))),
            samples=len(values),
        )
