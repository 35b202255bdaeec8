"""The report of a results folder (``__init__``'s format): ``report.md`` with its PNG figures, and
the plain-text table the CLI prints after a run.

Every figure may be missing from a level (a unary run has no TTFT, a level where everything
failed has no latency, stage or path figures): such a cell reads ``n/a`` instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ragtune.loadtest import plots

Level = dict[str, Any]
NA = "n/a"
REPORT = "report.md"


def load_run(results_dir: Path) -> dict[str, Any]:
    """``run.json``; its levels from ``levels.json`` when it carries none (a run cut short)."""
    run = json.loads((results_dir / "run.json").read_text())
    if not run.get("levels") and (results_dir / "levels.json").is_file():
        run["levels"] = json.loads((results_dir / "levels.json").read_text())
    run.setdefault("levels", [])
    return run


def write_report(results_dir: Path, baseline_dir: Path | None = None) -> Path:
    """Writes ``results_dir/report.md`` and its figures; returns the report's path."""
    results_dir = Path(results_dir)
    run = load_run(results_dir)
    levels: list[Level] = run["levels"]
    baseline = load_run(Path(baseline_dir)) if baseline_dir is not None else None
    overhead = overhead_ratios(levels, baseline["levels"]) if baseline else []
    figures = plots.draw_all(
        results_dir,
        levels,
        [(name, r) for name, r, _ in overhead],
        saturation=(run.get("saturation") or {}).get("level"),
    )

    sections = [
        _header(run, results_dir),
        _summary(levels),
        _outcome(levels),
        _figure(figures, plots.LATENCY_THROUGHPUT, "Latency vs throughput"),
        _per_path(levels),
        _figure(figures, plots.LATENCY_BY_PATH, "Latency per path"),
        _stages(levels),
        _figure(figures, plots.STAGES, "Stage breakdown"),
        "## Goodput\n\nGoodput: the share of requests sent that returned OK within the SLOs "
        f"({plots.slo_text(levels)}).",
        _figure(figures, plots.GOODPUT, "Goodput"),
        _freshness(levels),
        _churn(levels),
        _saturation(run.get("saturation")),
    ]
    if baseline is not None:
        sections += [
            _overhead(overhead, baseline, Path(baseline_dir or "")),
            _figure(figures, plots.OVERHEAD, "Overhead"),
        ]
    out = results_dir / REPORT
    out.write_text("\n\n".join(s for s in sections if s) + "\n")
    return out


# -- formatting ------------------------------------------------------------------------------


def num(value: float | None, digits: int | None = None) -> str:
    """Milliseconds and rates to three significant digits or so; more would be noise."""
    if value is None:
        return NA
    if digits is None:
        digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f}"


def share(value: float | None) -> str:
    return NA if value is None else f"{100 * value:.1f}%"


def spread(dist: dict[str, float] | None) -> str:
    """``p50 / p90 / p99`` of a distribution, or n/a."""
    if not dist:
        return NA
    return " / ".join(num(dist.get(p)) for p in ("p50", "p90", "p99"))


def latency(level: Level, metric: str) -> dict[str, float] | None:
    return (level.get("latency") or {}).get(metric)


def errors_text(errors: dict[str, int] | None) -> str:
    if not errors:
        return "none"
    return ", ".join(f"{code} {n}" for code, n in sorted(errors.items(), key=lambda e: -e[1]))


def mix_text(mix: dict[str, float] | None) -> str:
    return ", ".join(f"{path} {share(s)}" for path, s in mix.items()) if mix else NA


def bottleneck(level: Level) -> str:
    stages = level.get("stages") or {}
    name = stages.get("bottleneck")
    if not name:
        return NA
    return f"{name} ({share((stages.get('share') or {}).get(name))})"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def saturated_levels(levels: Sequence[Level]) -> list[Level]:
    return [lv for lv in levels if (lv.get("generator") or {}).get("saturated")]


def cpu_warning(levels: Sequence[Level]) -> str:
    """A generator short of CPU adds its own queueing to every latency it measures."""
    hot = saturated_levels(levels)
    if not hot:
        return ""
    names = ", ".join(
        f"{lv['level']} ({num((lv.get('generator') or {}).get('cpu_cores'), 2)} cores)"
        for lv in hot
    )
    return (
        f"WARNING: the load generator was CPU-saturated at {names}: latencies there include the "
        "generator's own queueing. Give it more cores or split the load over several processes."
    )


# -- sections --------------------------------------------------------------------------------


def _header(run: dict[str, Any], results_dir: Path) -> str:
    workload = run.get("workload") or {}
    lines = [
        "# Load test report",
        "",
        f"- results: `{results_dir}`",
        f"- target: `{run.get('target', NA)}` (mode: {run.get('mode', NA)})",
        f"- started: {run.get('started_at', NA)}",
        f"- levels: {', '.join(lv['level'] for lv in run['levels']) or 'none'}",
    ]
    if workload:
        lines += ["", "Workload:", "", "```json", json.dumps(workload, indent=2), "```"]
    return "\n".join(lines)


def _summary(levels: Sequence[Level]) -> str:
    rows = [
        [
            lv["level"],
            str(lv.get("sent", 0)),
            str(lv.get("completed", 0)),
            str(lv.get("failed", 0)),
            num(lv.get("request_throughput"), 2),
            num(lv.get("output_token_throughput")),
            *(spread(latency(lv, m)) for m in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")),
        ]
        for lv in levels
    ]
    header = ["level", "sent", "OK", "failed", "req/s", "out tok/s"]
    header += [f"{m} ms p50/p90/p99" for m in ("TTFT", "TPOT", "ITL", "e2el")]
    return "## Summary\n\n" + table(header, rows)


def _outcome(levels: Sequence[Level]) -> str:
    rows = []
    for lv in levels:
        goodput = lv.get("goodput") or {}
        cost = lv.get("cost") or {}
        by_path = ", ".join(f"{p} {num(c)}" for p, c in (cost.get("by_path") or {}).items())
        cpu = lv.get("generator") or {}
        rows.append(
            [
                lv["level"],
                f"{share(goodput.get('share'))} ({num(goodput.get('requests_per_s'), 2)} req/s)",
                errors_text(lv.get("errors")),
                mix_text(lv.get("route_mix")),
                num(cost.get("mean_micro_usd")) if lv.get("completed") else NA,
                by_path or NA,
                bottleneck(lv),
                num(cpu.get("cpu_cores"), 2) + (" (saturated)" if cpu.get("saturated") else ""),
            ]
        )
    header = ["level", "goodput", "errors", "route mix", "cost/req µUSD", "cost by path µUSD"]
    header += ["bottleneck stage", "generator CPU cores"]
    text = "## Outcome\n\n" + table(header, rows)
    warning = cpu_warning(levels)
    return text + (f"\n\n> **{warning}**" if warning else "")


def _per_path(levels: Sequence[Level]) -> str:
    paths = sorted({p for lv in levels for p in (lv.get("per_path") or {})})
    if not paths:
        return "## Per path\n\nn/a: no request completed."
    parts = ["## Per path"]
    for path in paths:
        rows = []
        for lv in levels:
            entry = (lv.get("per_path") or {}).get(path)
            if entry is None:
                rows.append([lv["level"], "0", NA, NA, NA, NA])
                continue
            cost = ((lv.get("cost") or {}).get("by_path") or {}).get(path)
            stages = entry.get("stages") or {}
            slowest = stages.get("bottleneck")
            slowest_ms = (stages.get("mean_ms") or {}).get(slowest) if slowest else None
            rows.append(
                [
                    lv["level"],
                    str(entry.get("count", 0)),
                    spread(entry.get("ttft_ms")),
                    spread(entry.get("e2el_ms")),
                    num(cost),
                    f"{slowest} ({num(slowest_ms)} ms)" if slowest else NA,
                ]
            )
        header = ["level", "requests", "TTFT ms p50/p90/p99", "e2el ms p50/p90/p99"]
        header += ["cost/req µUSD", "slowest stage"]
        parts.append(f"### {path}\n\n" + table(header, rows))
    return "\n\n".join(parts)


def _stages(levels: Sequence[Level]) -> str:
    stages = plots.stage_order(levels)
    if not stages:
        return "## Stages\n\nn/a: no stage timings (no request completed)."
    rows = []
    for lv in levels:
        means = (lv.get("stages") or {}).get("mean_ms") or {}
        top = (lv.get("stages") or {}).get("bottleneck")
        cells = [
            NA if s not in means else f"**{num(means[s])}**" if s == top else num(means[s])
            for s in stages
        ]
        rows.append([lv["level"], *cells, bottleneck(lv)])
    intro = (
        "Mean milliseconds per stage over the OK requests (a stage a request skipped counts 0), "
        "as the gateway timed them; the bottleneck is the largest (bold)."
    )
    header = ["level", *(f"{s} ms" for s in stages), "bottleneck (share)"]
    return "## Stages\n\n" + intro + "\n\n" + table(header, rows)


def _freshness(levels: Sequence[Level]) -> str:
    rows = [
        [
            lv["level"],
            str(f.get("samples", 0)),
            num(f.get("p50_ms")),
            num(f.get("p90_ms")),
            num(f.get("max_ms")),
            str(f.get("misses", 0)),
        ]
        for lv in levels
        if (f := lv.get("freshness"))
    ]
    if not rows:
        return ""
    intro = (
        "Freshness lag: from an Ingest's acknowledgement to the first answer citing the new "
        "document (0 ms: read-your-writes). A miss: the Ingest failed or no search found it."
    )
    header = ["level", "samples", "p50 ms", "p90 ms", "max ms", "misses"]
    return "## Freshness\n\n" + intro + "\n\n" + table(header, rows)


def _churn(levels: Sequence[Level]) -> str:
    rows = [
        [lv["level"], str(c.get("loads", 0)), str(c.get("unloads", 0)), str(c.get("errors", 0))]
        for lv in levels
        if (c := lv.get("adapter_churn"))
    ]
    if not rows:
        return ""
    return "## Adapter churn\n\n" + table(["level", "loads", "unloads", "errors"], rows)


def _saturation(saturation: dict[str, Any] | None) -> str:
    """The sweep's verdict (``runner``): the level after which throughput stopped paying for
    latency, and why the sweep stopped there."""
    if not saturation:
        return ""
    where = saturation.get("level")
    known = {"level", "concurrency", "request_throughput", "output_token_throughput", "reason"}
    if where:
        text = (
            f"Saturation point: **{where}**, {num(saturation.get('request_throughput'), 2)} req/s "
            f"and {num(saturation.get('output_token_throughput'))} output tok/s."
        )
    else:
        text = "No saturation point: not even the first level held."
    lines = ["## Saturation", "", text]
    if saturation.get("reason"):
        lines += ["", f"The sweep stopped: {saturation['reason']}."]
    extra = [f"- {key}: {value}" for key, value in saturation.items() if key not in known]
    return "\n".join(lines + ([""] + extra if extra else []))


def _figure(figures: Sequence[str], name: str, alt: str) -> str:
    return f"![{alt}]({name})" if name in figures else ""


# -- overhead against the in-process baseline ------------------------------------------------

E2EL = "e2el"


def ratio(platform: float | None, baseline: float | None) -> float | None:
    if platform is None or not baseline:
        return None
    return platform / baseline


def overhead_ratios(
    levels: Sequence[Level], baseline: Sequence[Level]
) -> list[tuple[str, dict[str, float | None], list[list[str]]]]:
    """Per level present in both runs: ``(level, {stage | "e2el": platform/baseline}, rows)``,
    the rows being the markdown table's (stage, platform ms, baseline ms, ratio, added ms)."""
    by_name = {lv["level"]: lv for lv in baseline}
    out = []
    for lv in levels:
        base = by_name.get(lv["level"])
        if base is None:
            continue
        mine = (lv.get("stages") or {}).get("mean_ms") or {}
        theirs = (base.get("stages") or {}).get("mean_ms") or {}
        stages = [(s, mine.get(s), theirs.get(s)) for s in plots.stage_order([lv, base])]
        e2el = [
            (
                f"{E2EL} {p}",
                plots.percentile(latency(lv, "e2el_ms"), p),
                plots.percentile(latency(base, "e2el_ms"), p),
            )
            for p in ("mean", "p50", "p99")
        ]
        # The figure shows the stages and the mean end to end; the table all of them.
        ratios = {name: ratio(a, b) for name, a, b in stages}
        ratios[E2EL] = ratio(e2el[0][1], e2el[0][2])
        pairs = stages + e2el
        rows = [
            [
                name,
                num(a),
                num(b),
                NA if (r := ratio(a, b)) is None else f"{r:.2f}×",
                num(a - b) if a is not None and b is not None else NA,
            ]
            for name, a, b in pairs
        ]
        out.append((lv["level"], ratios, rows))
    return out


def _overhead(
    overhead: Sequence[tuple[str, dict[str, float | None], list[list[str]]]],
    baseline: dict[str, Any],
    baseline_dir: Path,
) -> str:
    intro = (
        f"Against `{baseline_dir}` (mode: {baseline.get('mode', NA)}): the same workload with the "
        "service objects called in-process, without gRPC or Serve. Ratio = platform / baseline; "
        "added = platform − baseline."
    )
    if not overhead:
        return "## Overhead\n\n" + intro + "\n\nn/a: no load level is in both runs."
    parts = ["## Overhead", intro]
    header = ["stage", "platform ms", "baseline ms", "ratio", "added ms"]
    for level, ratios, rows in overhead:
        headline = ratios.get(E2EL)
        title = f"### {level}: e2el {NA if headline is None else f'{headline:.2f}×'} the baseline"
        parts.append(title + "\n\n" + table(header, rows))
    return "\n\n".join(parts)


# -- console ---------------------------------------------------------------------------------


def summary_table(levels: list[Level]) -> str:
    """A fixed-width table of the levels for a terminal (what the CLI prints after a run)."""
    columns = [
        ("level", 12, lambda lv: lv["level"]),
        ("sent", 6, lambda lv: str(lv.get("sent", 0))),
        ("fail", 5, lambda lv: str(lv.get("failed", 0))),
        ("req/s", 7, lambda lv: num(lv.get("request_throughput"), 2)),
        ("tok/s", 7, lambda lv: num(lv.get("output_token_throughput"))),
        ("ttft50", 7, lambda lv: num(plots.percentile(latency(lv, "ttft_ms"), "p50"))),
        ("ttft99", 7, lambda lv: num(plots.percentile(latency(lv, "ttft_ms"), "p99"))),
        ("e2el50", 7, lambda lv: num(plots.percentile(latency(lv, "e2el_ms"), "p50"))),
        ("e2el90", 7, lambda lv: num(plots.percentile(latency(lv, "e2el_ms"), "p90"))),
        ("e2el99", 7, lambda lv: num(plots.percentile(latency(lv, "e2el_ms"), "p99"))),
        ("good", 6, lambda lv: share((lv.get("goodput") or {}).get("share"))),
        ("bottleneck", 12, lambda lv: (lv.get("stages") or {}).get("bottleneck") or NA),
    ]

    # The level name left-aligned, numbers right-aligned so their digits line up.
    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        widths = [w for _, w, _ in columns]
        return f"{first:<{widths[0]}}" + "".join(
            f" {c:>{w}}" if i < len(rest) - 1 else f"  {c:<{w}}"
            for i, (c, w) in enumerate(zip(rest, widths[1:], strict=True))
        )

    lines = [line([name for name, _, _ in columns])]
    lines += [line([cell(lv) for _, _, cell in columns]) for lv in levels]
    lines.append("latencies in ms; good = goodput share of requests sent")
    warning = cpu_warning(levels)
    return "\n".join([ln.rstrip() for ln in lines] + ([warning] if warning else []))
