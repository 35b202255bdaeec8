"""ragtune's load-testing toolkit (``ragtune-load``, ``python -m load_tests``; docs/load-testing.md).

Drives the gateway's ``Answer``/``AnswerStream`` the way traffic would (closed-loop concurrency,
open-loop constant/Poisson/gamma arrivals, sweeps to saturation), and writes a results folder:

- ``run.json``: ``{"workload": {...}, "target": str, "mode": "platform" | "baseline",
  "started_at": ISO-8601, "complete": bool, "levels": [Level, ...], "saturation": {...} | null,
  "generator": {"cpu_cores": float, "saturated": bool}}``
- ``levels.json`` (the list of ``Level``) and ``levels.csv`` (the same, flattened to columns);
- ``requests-<level>.jsonl``: one line per request sent (``stats.RequestRecord``).

A ``Level`` (``stats.summarize``) holds, for one load level: ``level`` (its name, e.g. ``c=4``
or ``rate=2.0``), ``kind`` (``concurrency`` | ``rate``), ``value``, ``duration_s``, ``sent``,
``completed``, ``failed``, ``errors`` (gRPC code name -> count), ``request_throughput``,
``output_token_throughput``, ``total_token_throughput``, ``peak_concurrency``, ``latency``
(``e2el_ms``, ``ttft_ms``, ``tpot_ms``, ``itl_ms``: each ``{mean, std, p50, p90, p99}`` or null),
``goodput`` (``{ttft_ms, e2el_ms, share, requests_per_s}``), ``route_mix`` (path -> share),
``cost`` (``{mean_micro_usd, by_path: {path: mean_micro_usd}}``), ``stages`` (``{mean_ms:
{stage: ms}, share: {stage: 0..1}, bottleneck: stage}``), ``per_path`` (path -> ``{count,
e2el_ms, ttft_ms, stages}``), ``freshness`` (``{samples, p50_ms, p90_ms, max_ms, misses}`` or
null), ``adapter_churn`` (``{loads, unloads, errors}`` or null) and ``generator``
(``{cpu_cores, saturated}``).
"""
