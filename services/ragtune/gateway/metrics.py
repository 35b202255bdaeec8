"""The gateway's Prometheus metrics (through Ray's metrics API): answers by path and outcome,
latency per path and stage, tokens, cost, and route decisions. Labels are bounded: paths,
stages, reason codes, outcomes, and adapter names from the registry."""

from __future__ import annotations

from collections.abc import Iterable

from ragtune.common.metrics import counter, histogram
from ragtune.v1 import gateway_pb2


class GatewayMetrics:
    def __init__(self) -> None:
        self.decisions = counter(
            "ragtune_route_decisions_total",
            "Route decisions, by path and reason code (one per reason of each).",
            ("path", "reason"),
        )
        self.cost = counter(
            "ragtune_request_cost_usd_total",
            "Cost of answered requests in USD, by path and stage.",
            ("path", "stage"),
        )
        self.answers = counter(
            "ragtune_gateway_answers_total",
            "Answer/AnswerStream requests by path and outcome (ok, client_error: the request "
            "was refused, server_error: ragtune failed it, cancelled); path 'none' when it "
            "ended before a route was chosen.",
            ("path", "outcome"),
        )
        self.latency = histogram(
            "ragtune_gateway_request_seconds",
            "Time to answer, by path (streams: until the last message).",
            ("path",),
        )
        self.stage = histogram(
            "ragtune_gateway_stage_seconds",
            "Time spent in each stage of an answer, as the gateway waited for it.",
            ("stage", "path"),
        )
        self.deadlines = counter(
            "ragtune_gateway_deadline_exceeded_total",
            "Answers whose time budget (the client's timeout or latency_budget_ms) ended, by the "
            "stage that was stopped or not started; work after it was not done.",
            ("stage",),
        )
        self.quota_refusals = counter(
            "ragtune_gateway_quota_refusals_total",
            "Requests refused for a tenant's rate limit (kind=rate) or daily token quota "
            "(kind=tokens), before any work.",
            ("kind",),
        )
        self.tokens = counter(
            "ragtune_gateway_tokens_total",
            "Prompt and completion tokens of answers, by path and adapter.",
            ("path", "adapter", "kind"),
        )

    def quota_refused(self, kind: str) -> None:
        self.quota_refusals.inc(tags={"kind": kind})

    def deadline_exceeded(self, stage: str) -> None:
        self.deadlines.inc(tags={"stage": stage})

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
