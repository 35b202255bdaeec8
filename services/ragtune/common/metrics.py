"""Prometheus metrics through Ray's metrics API, declared one way in every service.

Names and label keys are what dashboards and alert rules in deploy/ query: keep each name a
literal at its declaration (tests/unit/test_observability.py reads them from the source).
"""

from __future__ import annotations

from collections.abc import Sequence

from ray.serve import metrics

from ragtune.common.serving import LATENCY_BUCKETS

# Requests or items per batch, for dynamic batching.
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128]


def counter(name: str, description: str, tags: tuple[str, ...] = ()) -> metrics.Counter:
    return metrics.Counter(name, description=description, tag_keys=tags)


def gauge(name: str, description: str, tags: tuple[str, ...] = ()) -> metrics.Gauge:
    return metrics.Gauge(name, description=description, tag_keys=tags)


def histogram(
    name: str,
    description: str,
    tags: tuple[str, ...] = (),
    buckets: Sequence[float] = LATENCY_BUCKETS,
) -> metrics.Histogram:
    """Seconds by default: the latency buckets include the SLO thresholds."""
    return metrics.Histogram(name, description=description, boundaries=list(buckets), tag_keys=tags)
