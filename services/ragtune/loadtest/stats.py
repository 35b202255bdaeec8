"""Per-request records and the figures of a load level (the ``Level`` of ``__init__``'s format).

Definitions follow ``vllm bench serve``'s, so figures compare: TTFT is the time to the first
answer text; TPOT is (end-to-end - TTFT) / (output tokens - 1); ITL is each gap between two
text deltas (the gateway may put several tokens in one delta, so ITL >= TPOT); goodput is the
share of sent requests that succeeded within every SLO.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# A generator process above this share of one core is itself the bottleneck (asyncio runs on
# one thread; gRPC's C core polls on others, so the process can pass 1.0 a little).
SATURATED_CORES = 0.9


@dataclass
class RequestRecord:
    level: str
    t_start: float  # seconds since the run started
    requested_path: str
    tenant: int
    stream: bool
    adapter: str = ""
    collection: str = ""
    path: str = ""  # the path that answered ("" when the request failed)
    code: str = "OK"
    error: str = ""
    e2el_ms: float = 0.0
    ttft_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_micro_usd: int = 0
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def t_end(self) -> float:
        return self.t_start + self.e2el_ms / 1000

    @property
    def tpot_ms(self) -> float | None:
        if self.ttft_ms is None or self.output_tokens < 2:
            return None
        return (self.e2el_ms - self.ttft_ms) / (self.output_tokens - 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def distribution(values: Iterable[float | None]) -> dict[str, float] | None:
    """mean, std and p50/p90/p99 (linear interpolation, as numpy's default), or None if empty."""
    array = np.array([v for v in values if v is not None], dtype=float)
    if array.size == 0:
        return None
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
    }


def peak_concurrency(records: Sequence[RequestRecord]) -> int:
    events = sorted([(r.t_start, 1) for r in records] + [(r.t_end, -1) for r in records])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def stage_breakdown(records: Sequence[RequestRecord]) -> dict[str, Any] | None:
    """Mean milliseconds per stage over the successful requests (a stage a request skipped
    counts 0 for it), each stage's share of their sum, and the largest: the bottleneck."""
    ok = [r for r in records if r.ok]
    if not ok:
        return None
    stages: list[str] = []
    for r in ok:
        stages += [s for s in r.stages if s not in stages]
    mean = {s: sum(r.stages.get(s, 0.0) for r in ok) / len(ok) for s in stages}
    total = sum(mean.values())
    if total <= 0:
        return None
    return {
        "mean_ms": mean,
        "share": {s: ms / total for s, ms in mean.items()},
        "bottleneck": max(mean, key=lambda s: mean[s]),
    }


def summarize(
    records: Sequence[RequestRecord],
    *,
    level: str,
    kind: str,
    value: float,
    duration_s: float,
    slo_ttft_ms: float,
    slo_e2el_ms: float,
    cpu_cores: float,
    freshness: Sequence[float | None] = (),
    churn: dict[str, int] | None = None,
) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    duration_s = max(duration_s, 1e-9)
    output_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = sum(r.prompt_tokens for r in ok)

    def meets_slo(r: RequestRecord) -> bool:
        ttft = r.ttft_ms if r.ttft_ms is not None else r.e2el_ms
        return (
            r.ok
            and (not slo_ttft_ms or ttft <= slo_ttft_ms)
            and (not slo_e2el_ms or r.e2el_ms <= slo_e2el_ms)
        )

    good = sum(meets_slo(r) for r in records)
    by_path: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in ok:
        by_path[r.path].append(r)
    lags = [lag for lag in freshness if lag is not None]
    return {
        "level": level,
        "kind": kind,
        "value": value,
        "duration_s": duration_s,
        "sent": len(records),
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "errors": dict(Counter(r.code for r in records if not r.ok)),
        "request_throughput": len(ok) / duration_s,
        "output_token_throughput": output_tokens / duration_s,
        "total_token_throughput": (output_tokens + prompt_tokens) / duration_s,
        "peak_concurrency": peak_concurrency(records),
        "latency": {
            "e2el_ms": distribution(r.e2el_ms for r in ok),
            "ttft_ms": distribution(r.ttft_ms for r in ok),
            "tpot_ms": distribution(r.tpot_ms for r in ok),
            "itl_ms": distribution(gap for r in ok for gap in r.itl_ms),
        },
        "goodput": {
            "ttft_ms": slo_ttft_ms,
            "e2el_ms": slo_e2el_ms,
            "share": good / len(records) if records else 0.0,
            "requests_per_s": good / duration_s,
        },
        "route_mix": {p: len(rs) / len(ok) for p, rs in sorted(by_path.items())},
        "cost": {
            "mean_micro_usd": sum(r.cost_micro_usd for r in ok) / len(ok) if ok else 0.0,
            "by_path": {
                p: sum(r.cost_micro_usd for r in rs) / len(rs) for p, rs in sorted(by_path.items())
            },
        },
        "stages": stage_breakdown(ok),
        "per_path": {
            p: {
                "count": len(rs),
                "e2el_ms": distribution(r.e2el_ms for r in rs),
                "ttft_ms": distribution(r.ttft_ms for r in rs),
                "stages": stage_breakdown(rs),
            }
            for p, rs in sorted(by_path.items())
        },
        "freshness": None
        if not freshness
        else {
            "samples": len(freshness),
            "misses": len(freshness) - len(lags),
            "p50_ms": float(np.percentile(lags, 50)) if lags else None,
            "p90_ms": float(np.percentile(lags, 90)) if lags else None,
            "max_ms": max(lags) if lags else None,
        },
        "adapter_churn": churn,
        "generator": {"cpu_cores": cpu_cores, "saturated": cpu_cores > SATURATED_CORES},
    }


def flatten(level: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """One CSV row: nested keys joined with '.', lists and None as they print."""
    row: dict[str, Any] = {}
    for key, value in level.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            row.update(flatten(value, f"{name}."))
        else:
            row[name] = value
    return row


def levels_csv(levels: Sequence[dict[str, Any]]) -> str:
    rows = [flatten(level) for level in levels]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
