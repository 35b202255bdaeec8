"""Grafana dashboards as code (grafana-foundation-sdk, Grafana 11 schema).

``ragtune dashboards`` writes them as JSON to ``deploy/grafana/``, where they are checked in;
a test fails when the files drift from this code, and another runs every panel query against a
real Prometheus scraping a running stack. Metric names carry the ``ray_`` prefix that Ray's
metrics port adds; ``sum by (...)`` folds away the per-replica labels Ray adds.
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"
VLLM_PREFIX = "ray_vllm_"  # vLLM's own metrics, present only when the vLLM engine runs


def _query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend or "__auto")
        .ref_id(ref)
        .datasource(DATASOURCE)
    )


def _series(title: str, unit: str, description: str, *queries: tuple[str, str]):
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .fill_opacity(10)
    )
    for i, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + i)))
    return panel


def _stat(title: str, unit: str, description: str, expr: str):
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(4)
        .span(6)
        .with_target(_query(expr, title))
    )


def _quantiles(metric: str, by: str = "", selector: str = "") -> list[tuple[str, str]]:
    """p50/p95/p99 of a histogram, per ``by`` label (or overall)."""
    labels = f"{by}, le" if by else "le"
    legend = f" {{{{{by}}}}}" if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{selector}{RATE})))",
            f"p{round(q * 100)}{legend}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _board(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["ragtune"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
    )


ANSWERS = "ray_ragtune_gateway_answers_total"


def overview() -> dashboard.Dashboard:
    errors = f'sum by (path) (rate({ANSWERS}{{outcome="server_error"}}{RATE}))'
    total = f"sum by (path) (rate({ANSWERS}{RATE}))"
    cost = "ray_ragtune_request_cost_usd_total"
    return (
        _board("ragtune-overview", "ragtune / Overview", "Traffic, errors, latency, routes, cost.")
        .with_panel(_stat("Answers/s", "reqps", "All paths.", f"sum(rate({ANSWERS}{RATE}))"))
        .with_panel(
            _stat(
                "Error ratio",
                "percentunit",
                "Answers ragtune failed (server errors) over all answers; refusals and calls "
                "the client cancelled or let pass its deadline do not count.",
                f'(sum(rate({ANSWERS}{{outcome="server_error"}}{RATE})) or vector(0))'
                f" / sum(rate({ANSWERS}{RATE}))",
            )
        )
        .with_panel(
            _stat(
                "Cost per hour",
                "currencyUSD",
                "At the gateway's pricing config.",
                f"sum(rate({cost}{RATE})) * 3600",
            )  # fmt: skip
        )
        .with_panel(
            _stat(
                "Answer p95",
                "s",
                "All paths.",
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(ray_ragtune_gateway_request_seconds_bucket{RATE})))",
            )
        )
        .with_row(dashboard.Row("Traffic and errors"))
        .with_panel(
            _series(
                "Answers by path", "reqps", "Answer and AnswerStream calls.", (total, "{{path}}")
            )
        )  # fmt: skip
        .with_panel(
            _series(
                "Error ratio by path",
                "percentunit",
                "Server errors over answers (the availability SLO's ratio); path 'none' "
                "failed before routing.",
                (f"({errors} or {total} * 0) / {total}", "{{path}}"),
            )
        )
        .with_panel(
            _series(
                "RPC errors by service and code",
                "reqps",
                "Every non-OK status of every service's RPCs, by outcome: server_error counts "
                "against the SLOs; client_error (refused) and cancelled (the client went away "
                "or its deadline passed) do not.",
                (
                    "sum by (service, code, outcome) "
                    f'(rate(ray_ragtune_rpc_requests_total{{code!="OK"}}{RATE}))',
                    "{{service}} {{code}} ({{outcome}})",
                ),
            )
        )
        .with_row(dashboard.Row("Latency, routes and cost"))
        .with_panel(
            _series(
                "Answer latency by path",
                "s",
                "p50/p95/p99 of time to the last message.",
                *_quantiles("ray_ragtune_gateway_request_seconds", "path"),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Route decisions by reason",
                "reqps",
                "Why the router chose each path (one count per reason of a decision).",
                (
                    f"sum by (path, reason) (rate(ray_ragtune_route_decisions_total{RATE}))",
                    "{{path}} {{reason}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Cost per hour by path",
                "currencyUSD",
                "USD per hour at the current rate.",
                (f"sum by (path) (rate({cost}{RATE})) * 3600", "{{path}}"),
            )  # fmt: skip
        )
    )


def stages() -> dashboard.Dashboard:
    return (
        _board("ragtune-stages", "ragtune / Stages", "Where the time and money of an answer go.")
        .with_panel(
            _series(
                "Stage latency p95",
                "s",
                "As the gateway waited for each stage.",
                (
                    "histogram_quantile(0.95, sum by (stage, le) "
                    f"(rate(ray_ragtune_gateway_stage_seconds_bucket{RATE})))",
                    "{{stage}}",
                ),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Stage latency p50",
                "s",
                "As the gateway waited for each stage.",
                (
                    "histogram_quantile(0.5, sum by (stage, le) "
                    f"(rate(ray_ragtune_gateway_stage_seconds_bucket{RATE})))",
                    "{{stage}}",
                ),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "RPC latency p95",
                "s",
                "Inside each service, per RPC.",
                (
                    "histogram_quantile(0.95, sum by (service, rpc, le) "
                    f"(rate(ray_ragtune_rpc_latency_seconds_bucket{RATE})))",
                    "{{service}}/{{rpc}}",
                ),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "RPCs by service and code",
                "reqps",
                "Every service's RPC traffic.",
                (
                    f"sum by (service, code) (rate(ray_ragtune_rpc_requests_total{RATE}))",
                    "{{service}} {{code}}",
                ),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Cost per hour by stage",
                "currencyUSD",
                "Busy time × worker price.",
                (
                    f"sum by (stage) (rate(ray_ragtune_request_cost_usd_total{RATE})) * 3600",
                    "{{stage}}",
                ),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Embedding batches",
                "short",
                "Requests per model call (dynamic batching) and requests left waiting.",
                (
                    "sum(rate(ray_ragtune_embedding_batch_requests_sum"
                    f"{RATE})) / sum(rate(ray_ragtune_embedding_batch_requests_count{RATE}))",
                    "requests per batch",
                ),  # fmt: skip
                ("max(ray_ragtune_embedding_queue_depth)", "queue depth"),
            )
        )
        .with_panel(
            _series(
                "Truncation",
                "short",
                "Inputs cut at the model's token limit (never silent: also in each reply).",
                (f"sum(rate(ray_ragtune_embedding_truncated_inputs_total{RATE}))", "embedding"),
                (f"sum(rate(ray_ragtune_rerank_truncated_passages_total{RATE}))", "rerank"),
            )
        )
    )


def generation() -> dashboard.Dashboard:
    return (
        _board(
            "ragtune-generation",
            "ragtune / Generation and adapters",
            "Streaming latency, tokens, LoRA adapters, and vLLM's own metrics.",
        )  # fmt: skip
        .with_panel(
            _series(
                "Time to first token",
                "s",
                "From the request reaching the engine.",
                *_quantiles("ray_ragtune_generation_time_to_first_token_seconds", "adapter"),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Inter-token latency",
                "s",
                "Between streamed chunks of one request.",
                *_quantiles("ray_ragtune_generation_inter_token_seconds", "adapter"),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Tokens/s by path",
                "short",
                "Prompt and completion tokens of answers.",
                (
                    f"sum by (path, kind) (rate(ray_ragtune_gateway_tokens_total{RATE}))",
                    "{{path}} {{kind}}",
                ),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Tokens/s by adapter",
                "short",
                "'base' is the model without an adapter.",
                (f"sum by (adapter) (rate(ray_ragtune_gateway_tokens_total{RATE}))", "{{adapter}}"),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Running requests and resident adapters",
                "short",
                "All replicas.",
                ("sum(ray_ragtune_generation_running_requests)", "running"),
                ("sum(ray_ragtune_generation_adapters_resident)", "resident adapters"),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Adapter loads and unloads",
                "ops",
                "Loads by outcome; unloads by reason (request, or evicted by the LRU).",
                (
                    f"sum by (outcome) (rate(ray_ragtune_generation_adapter_loads_total{RATE}))",
                    "load {{outcome}}",
                ),  # fmt: skip
                (
                    f"sum by (reason) (rate(ray_ragtune_generation_adapter_unloads_total{RATE}))",
                    "unload {{reason}}",
                ),  # fmt: skip
            )
        )
        .with_panel(
            _series(
                "Adapter load latency",
                "s",
                "Time to load an adapter into the engine.",
                *_quantiles("ray_ragtune_generation_adapter_load_seconds"),
            )  # fmt: skip
        )
        .with_row(dashboard.Row("vLLM (GPU engine only)"))
        .with_panel(
            _series(
                "vLLM scheduler",
                "short",
                "Requests running and waiting in vLLM.",
                (f"sum({VLLM_PREFIX}num_requests_running)", "running"),
                (f"sum({VLLM_PREFIX}num_requests_waiting)", "waiting"),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "vLLM KV cache usage",
                "percentunit",
                "Share of KV-cache blocks in use.",
                (f"max({VLLM_PREFIX}kv_cache_usage_perc)", "KV cache"),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "vLLM time to first token",
                "s",
                "vLLM's own measurement.",
                *_quantiles(f"{VLLM_PREFIX}time_to_first_token_seconds"),
            )  # fmt: skip
        )
    )


def retrieval() -> dashboard.Dashboard:
    return (
        _board("ragtune-retrieval", "ragtune / Retrieval", "Search latency, freshness, size.")
        .with_panel(
            _series(
                "Search latency",
                "s",
                "Inside the retrieval service.",
                *_quantiles(
                    "ray_ragtune_rpc_latency_seconds",
                    selector='{service="retrieval", rpc="Search"}',
                ),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Replica lag",
                "short",
                "Changes logged but not applied, per replica.",
                ("max by (replica) (ray_ragtune_retrieval_replica_lag_changes)", "{{replica}}"),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Applied sequence number",
                "short",
                "Per replica; equal when caught up.",
                ("max by (replica) (ray_ragtune_retrieval_applied_seq)", "{{replica}}"),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Index size",
                "short",
                "Vectors in memory, per replica.",
                ("max by (replica) (ray_ragtune_retrieval_index_vectors)", "{{replica}}"),
            )  # fmt: skip
        )
        .with_panel(
            _series(
                "Retrieval RPCs",
                "reqps",
                "By RPC and status.",
                (
                    "sum by (rpc, code) (rate(ray_ragtune_rpc_requests_total"
                    f'{{service="retrieval"}}{RATE}))',
                    "{{rpc}} {{code}}",
                ),
            )  # fmt: skip
        )
    )


DASHBOARDS = {
    "overview": overview,
    "stages": stages,
    "generation": generation,
    "retrieval": retrieval,
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def write_all(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in DASHBOARDS:
        path = out_dir / f"ragtune-{name}.json"
        path.write_text(render(name))
        paths.append(path)
    return paths


def panel_queries(board: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of a rendered dashboard, rows' panels included."""
    found = []
    for panel in board.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found.append((inner.get("title", ""), target["expr"]))
    return found
