"""The load generator's scheduling and arithmetic, against a fake gateway with known timings."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from ragtune.loadtest.callers import CallError
from ragtune.loadtest.runner import Runner, arrival_gap
from ragtune.loadtest.stats import RequestRecord, summarize
from ragtune.loadtest.workload import Workload
from ragtune.v1 import common_pb2, gateway_pb2


class FakeGateway:
    """Answers after ``service_s``, at most ``servers`` at a time (a server that saturates);
    refuses adapter 'bad!' as the gateway does; streams three deltas."""

    def __init__(self, service_s: float = 0.02, servers: int = 1000) -> None:
        self.service_s = service_s
        self.slots = asyncio.Semaphore(servers)
        self.calls: list[Any] = []

    def _done(self) -> gateway_pb2.AnswerResponse:
        return gateway_pb2.AnswerResponse(
            route=common_pb2.RouteDecision(path=common_pb2.PATH_RAG),
            usage=common_pb2.Usage(prompt_tokens=10, completion_tokens=4),
            cost=common_pb2.Cost(total_micro_usd=7),
            timings=[
                common_pb2.StageTiming(stage="retrieve", ms=10),
                common_pb2.StageTiming(stage="generate", ms=30),
                common_pb2.StageTiming(stage="total", ms=40),
            ],
        )

    async def answer(self, request: Any, key: str, timeout_s: float) -> Any:
        self.calls.append(request)
        if getattr(request, "adapter", "") == "bad!":
            raise CallError("INVALID_ARGUMENT", "adapter: bad name")
        async with self.slots:
            await asyncio.sleep(self.service_s)
        return self._done()

    async def answer_stream(self, request: Any, key: str, timeout_s: float) -> AsyncIterator:
        self.calls.append(request)
        if request.adapter == "bad!":
            raise CallError("INVALID_ARGUMENT", "adapter: bad name")
        async with self.slots:
            yield gateway_pb2.AnswerEvent(route=common_pb2.RouteDecision(path=common_pb2.PATH_RAG))
            for _ in range(3):
                await asyncio.sleep(self.service_s / 3)
                yield gateway_pb2.AnswerEvent(delta="word ")
            yield gateway_pb2.AnswerEvent(done=self._done())

    async def close(self) -> None:
        pass


def workload(**load: Any) -> Workload:
    return Workload.model_validate({
        "tenants": [{"key": "k"}],
        "questions": {"inline": ["what is the warranty?"]},
        "load": {"duration_s": 0.5, **load},
    })  # fmt: skip


def run(w: Workload, fake: FakeGateway, tmp_path) -> dict:
    return asyncio.run(Runner(w, fake, tmp_path).run())


def test_closed_loop_sends_exactly_the_requests_asked_and_measures_the_stream(tmp_path):
    w = workload(mode="closed", concurrency=[3], requests=10, duration_s=30)
    result = run(w, FakeGateway(service_s=0.03), tmp_path)
    (level,) = result["levels"]
    assert level["sent"] == level["completed"] == 10
    assert level["peak_concurrency"] == 3
    lines = [json.loads(x) for x in (tmp_path / "requests-c3.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and all(len(r["itl_ms"]) == 2 for r in lines)
    assert all(r["ttft_ms"] < r["e2el_ms"] for r in lines)
    assert level["output_token_throughput"] == pytest.approx(4 * level["request_throughput"])
    assert level["stages"]["share"] == pytest.approx({"retrieve": 0.25, "generate": 0.75})
    assert level["stages"]["bottleneck"] == "generate"
    assert level["cost"]["by_path"] == {"RAG": 7}


def test_errors_are_counted_by_code_and_lower_goodput(tmp_path):
    w = workload(mode="closed", concurrency=[2], requests=40, duration_s=30)
    w.mix = [w.mix[0].model_copy(update={"adapter": "bad!", "weight": 1}), w.mix[0]]
    level = run(w, FakeGateway(), tmp_path)["levels"][0]
    assert level["failed"] > 0
    assert level["errors"] == {"INVALID_ARGUMENT": level["failed"]}
    assert level["goodput"]["share"] == pytest.approx(level["completed"] / 40)


def test_open_loop_keeps_its_rate_whatever_the_replies(tmp_path):
    w = workload(mode="open", rates=[40], arrival="constant", duration_s=1.0)
    level = run(w, FakeGateway(service_s=0.2), tmp_path)["levels"][0]
    # 40/s for 1 s while each reply takes 0.2 s: ~8 in flight, arrivals not held back.
    assert 35 <= level["sent"] <= 42
    assert level["peak_concurrency"] >= 6


def test_gamma_burstiness_below_one_is_burstier_than_poisson():
    rng = random.Random(1)

    def cv(arrival: str, burstiness: float) -> float:
        gaps = [arrival_gap(rng, 2.0, arrival, burstiness) for _ in range(20000)]
        assert statistics.mean(gaps) == pytest.approx(0.5, rel=0.05)
        return statistics.stdev(gaps) / statistics.mean(gaps)

    assert cv("constant", 1) == 0
    assert cv("poisson", 1) == pytest.approx(1.0, rel=0.05)
    assert cv("gamma", 0.25) == pytest.approx(2.0, rel=0.1)


def test_sweep_stops_where_throughput_stops_rising(tmp_path):
    # Two servers: 1 -> 2 users doubles throughput, 4 users adds nothing.
    w = workload(mode="sweep", sweep_max_concurrency=16, duration_s=1.0)
    result = run(w, FakeGateway(service_s=0.1, servers=2), tmp_path)
    assert [lv["level"] for lv in result["levels"]] == ["c=1", "c=2", "c=4"]
    assert result["saturation"]["level"] == "c=2"
    assert "rose less than" in result["saturation"]["reason"]


def test_generator_cpu_over_a_core_is_flagged():
    record = RequestRecord(level="c=1", t_start=0, requested_path="AUTO", tenant=0, stream=True)
    kwargs = dict(level="c=1", kind="concurrency", value=1, duration_s=1,
                  slo_ttft_ms=0, slo_e2el_ms=0)  # fmt: skip
    assert summarize([record], cpu_cores=0.95, **kwargs)["generator"]["saturated"]
    assert not summarize([record], cpu_cores=0.3, **kwargs)["generator"]["saturated"]


def test_a_workload_with_a_typo_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match="concurency"):
        Workload.model_validate({"load": {"concurency": [1]}})
    with pytest.raises(ValidationError, match="mix"):
        Workload.model_validate({"mix": []})
