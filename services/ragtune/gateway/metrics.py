"""The gateway's Prometheus metrics (through Ray's metrics API): answers by path and outcome,
latency per path and stage, tokens, cost, and route decisions. Labels are bounded: paths,
stages, reason codes, outcomes, and adapter names from the registry."""

from __future__ import annotations

from collections.abc import Iterable

from ray.serve import metrics

from ragtune.common.serving import LATENCY_BUCKETS
from ragtune.v1 import gateway_pb2


class GatewayMetrics:
    def __init__(self) -> None:
        self.decisions = metrics.Counter(
            "ragtune_route_decisions_total",
            description="Route decisions, by path and reason code (one per reason of each).",
            tag_keys=("path", "reason"),
        )
        self.cost = metrics.Counter(
            "ragtune_request_cost_usd_total",
            description="Cost of answered requests in USD, by path and stage.",
            tag_keys=("path", "stage"),
        )
        self.answers = metrics.Counter(
            "ragtune_gateway_answers_total",
            description="Answer/AnswerStream requests by path and outcome (ok, client_error: "
            "the request was refused, server_error: ragtune failed it, cancelled); path 'none' "
            "when it ended before a route was chosen.",
            tag_keys=("path", "outcome"),
        )
        self.latency = metrics.Histogram(
            "ragtune_gateway_request_seconds",
            description="Time to answer, by path (streams: until the last message).",
            boundaries=LATENCY_BUCKETS,
            tag_keys=("path",),
        )
        self.stage = metrics.Histogram(
            "ragtune_gateway_stage_seconds",
            description="Time spent in each stage of an answer, as the gateway waited for it.",
            boundaries=LATENCY_BUCKETS,
            tag_keys=("stage", "path"),
        )
        self.tokens = metrics.Counter(
            "ragtune_gateway_tokens_total",
            description="Prompt and completion tokens of answers, by path and adapter.",
            tag_keys=("path", "adapter", "kind"),
        )

    def decided(self, path: str, reasons: Iterable[str]) -> None:
        for reason in reasons:
            self.decisions.inc(tags={"path": path, "reason": reason})

    def ended(self, path: str, outcome: str) -> None:
        self.answers.inc(tags={"path": path, "outcome": outcome})

    def answered(self, done: gateway_pb2.AnswerResponse, path: str, ms: float) -> None:
        for stage in done.cost.stages:
            if stage.micro_usd > 0:  # Ray counters refuse increments of 0
                self.cost.inc(stage.micro_usd / 1e6, tags={"path": path, "stage": stage.stage})
        self.latency.observe(ms / 1000, tags={"path": path})
        for timing in done.timings:
            if timing.stage != "total":
                self.stage.observe(timing.ms / 1000, tags={"stage": timing.stage, "path": path})
        adapter = done.route.adapter or "base"
        usage = done.usage
        for kind, n in (("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)):
            if n > 0:
                self.tokens.inc(n, tags={"path": path, "adapter": adapter, "kind": kind})
