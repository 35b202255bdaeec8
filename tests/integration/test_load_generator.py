"""The load generator against the real local stack: what it reports must add up."""

from __future__ import annotations

import asyncio
import json

import pytest

from ragtune.loadtest.callers import GrpcCaller
from ragtune.loadtest.runner import Runner
from ragtune.loadtest.workload import Workload

pytestmark = pytest.mark.integration

REQUESTS = 8


def run(workload: Workload, out) -> dict:
    async def go() -> dict:
        caller = GrpcCaller(workload.target)
        try:
            return await Runner(workload, caller, out).run()
        finally:
            await caller.close()

    return asyncio.run(go())


def test_a_closed_loop_run_reports_figures_that_add_up(platform, demo, tmp_path):
    workload = Workload.model_validate({
        "target": platform.target,
        "tenants": [{"key": platform.acme_key}],
        "mix": [
            {"path": "RAG", "collection": "demo", "weight": 2},
            {"path": "TUNED", "adapter": "pirate", "weight": 1},
            # Injected bad requests: an adapter name the gateway refuses.
            {"path": "TUNED", "adapter": "no such adapter!", "weight": 1},
        ],
        "max_tokens": 8,
        "stream": True,
        "load": {"mode": "closed", "concurrency": [2], "requests": REQUESTS, "duration_s": 300},
        "ingestion": {"collection": "load-fresh", "interval_s": 0.5, "poll_s": 0.1},
    })  # fmt: skip
    result = run(workload, tmp_path)

    (level,) = result["levels"]
    records = [json.loads(line) for line in (tmp_path / "requests-c2.jsonl").open()]
    assert level["sent"] == len(records) == REQUESTS
    bad = [r for r in records if r["adapter"] == "no such adapter!"]
    assert bad, "the seeded mix should have drawn a bad request"
    assert level["errors"] == {"INVALID_ARGUMENT": len(bad)}
    assert level["completed"] == REQUESTS - len(bad)

    for name in ("e2el_ms", "ttft_ms"):
        d = level["latency"][name]
        assert 0 < d["p50"] <= d["p90"] <= d["p99"], (name, d)
    assert level["latency"]["ttft_ms"]["p50"] <= level["latency"]["e2el_ms"]["p50"]
    assert 0 <= level["goodput"]["share"] <= 1
    assert level["output_token_throughput"] > 0
    assert set(level["route_mix"]) <= {"RAG", "TUNED"} and level["per_path"]["RAG"]["count"] > 0
    assert sum(level["stages"]["share"].values()) == pytest.approx(1.0, abs=1e-6)
    assert level["stages"]["bottleneck"] in level["stages"]["mean_ms"]
    assert level["cost"]["by_path"]["RAG"] > 0
    fresh = level["freshness"]
    assert fresh["samples"] >= 1 and fresh["p50_ms"] is not None and fresh["p50_ms"] > 0
    assert 0 <= level["generator"]["cpu_cores"] < 4

    written = json.loads((tmp_path / "run.json").read_text())
    assert written["complete"] and written["levels"] == result["levels"]
    assert (tmp_path / "levels.csv").read_text().splitlines()[0].startswith("level,")
