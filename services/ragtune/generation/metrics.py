"""The generation service's Prometheus metrics (through Ray's metrics API: one series per
replica, summed by dashboards) and the GenAI span attributes of a generation."""

from __future__ import annotations

from ragtune.common.metrics import counter, gauge, histogram
from ragtune.common.telemetry import annotate

# Seconds between streamed chunks; include the 0.1 s inter-token SLO threshold.
TOKEN_BUCKETS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5]


class GenerationMetrics:
    def __init__(self) -> None:
        self.ttft = histogram(
            "ragtune_generation_time_to_first_token_seconds",
            "From the request reaching the engine to its first streamed text.",
            ("adapter",),
        )
        self.inter_token = histogram(
            "ragtune_generation_inter_token_seconds",
            "Time between consecutive streamed chunks of one request.",
            ("adapter",),
            buckets=TOKEN_BUCKETS,
        )
        self.running = gauge(
            "ragtune_generation_running_requests",
            "Requests being generated on this replica (queued in the engine or decoding).",
        )
        self.loads = counter(
            "ragtune_generation_adapter_loads_total",
            "Adapter loads into the engine, by outcome (ok, error).",
            ("outcome",),
        )
        self.unloads = counter(
            "ragtune_generation_adapter_unloads_total",
            "Adapters taken out of the engine, by reason (request, evicted).",
            ("reason",),
        )
        self.load_seconds = histogram(
            "ragtune_generation_adapter_load_seconds", "Time to load an adapter into the engine."
        )
        self.resident = gauge(
            "ragtune_generation_adapters_resident", "Adapters resident in this replica's engine."
        )


def annotate_generation(
    *,
    model: str,
    adapter: str,
    max_tokens: int,
    temperature: float,
    prompt_tokens: int,
    completion_tokens: int,
    ttft_s: float | None,
    finish_reason: str,
) -> None:
    """OpenTelemetry GenAI attributes on the current (generation RPC) span."""
    annotate(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": max_tokens,
            "gen_ai.request.temperature": temperature,
            "gen_ai.usage.input_tokens": prompt_tokens,
            "gen_ai.usage.output_tokens": completion_tokens,
            "gen_ai.response.finish_reasons": (finish_reason,) if finish_reason else None,
            "gen_ai.server.time_to_first_token": ttft_s,
            "ragtune.adapter": adapter,
        }
    )
