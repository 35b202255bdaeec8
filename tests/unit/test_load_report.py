"""The load-test report (``ragtune.loadtest.report``) over synthetic results folders: what a reader
of report.md and its figures would notice, and that missing figures read n/a instead of failing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragtune.loadtest import plots
from ragtune.loadtest.report import overhead_ratios, summary_table, write_report
from ragtune.loadtest.stats import RequestRecord, summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PATHS = {"RAG": 300.0, "TUNED": 200.0, "HYBRID": 350.0}  # e2el p50 of each path, in ms


def dist(p50: float) -> dict[str, float]:
    return {"mean": p50, "std": p50 / 5, "p50": p50, "p90": 1.5 * p50, "p99": 2 * p50}


def level(
    name: str,
    scale: float,
    *,
    stream: bool = True,
    errors: dict[str, int] | None = None,
    auth_ms: float = 2.0,
    cpu_cores: float = 0.3,
) -> dict[str, Any]:
    """One Level as ``stats.summarize`` writes it; ``scale`` multiplies every time."""
    stages = {"auth": auth_ms, "route": 4 * scale, "retrieve": 20 * scale, "generate": 180 * scale}
    total = sum(stages.values())
    failed = sum((errors or {}).values())
    return {
        "level": name,
        "kind": "concurrency",
        "value": 1,
        "duration_s": 30.0,
        "sent": 60 + failed,
        "completed": 60,
        "failed": failed,
        "errors": errors or {},
        "request_throughput": 2.0 / scale,
        "output_token_throughput": 128.0 / scale,
        "total_token_throughput": 500.0 / scale,
        "peak_concurrency": 1,
        "latency": {
            "e2el_ms": dist(300 * scale),
            "ttft_ms": dist(90 * scale) if stream else None,
            "tpot_ms": dist(3 * scale) if stream else None,
            "itl_ms": dist(6 * scale) if stream else None,
        },
        "goodput": {"ttft_ms": 500.0, "e2el_ms": 1000.0, "share": 0.9, "requests_per_s": 1.8},
        "route_mix": {"HYBRID": 0.2, "RAG": 0.5, "TUNED": 0.3},
        "cost": {"mean_micro_usd": 42.0, "by_path": {"HYBRID": 60.0, "RAG": 45.0, "TUNED": 25.0}},
        "stages": {
            "mean_ms": stages,
            "share": {s: ms / total for s, ms in stages.items()},
            "bottleneck": "generate",
        },
        "per_path": {
            path: {
                "count": 20,
                "e2el_ms": dist(ms * scale),
                "ttft_ms": dist(ms * scale / 3) if stream else None,
                "stages": None,
            }
            for path, ms in PATHS.items()
        },
        "freshness": None,
        "adapter_churn": None,
        "generator": {"cpu_cores": cpu_cores, "saturated": cpu_cores > 0.9},
    }


def write_run(folder: Path, levels: list[dict[str, Any]], mode: str = "platform") -> Path:
    folder.mkdir(parents=True)
    run = {
        "workload": {"paths": {"auto": 2, "rag": 1}},
        "target": "localhost:9000",
        "mode": mode,
        "started_at": "2026-05-01T12:00:00+00:00",
        "levels": levels,
        "saturation": None,
        "generator": {"cpu_cores": 0.95, "saturated": True},
    }
    (folder / "run.json").write_text(json.dumps(run))
    return folder


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> tuple[Path, str]:
    """Two levels, three paths; c=4 is unary (no TTFT), has errors and a saturated generator.
    The baseline is the same run at half the times, except auth: 2 ms against 0.5 ms."""
    root = tmp_path_factory.mktemp("load")
    errors = {"UNAVAILABLE": 3, "DEADLINE_EXCEEDED": 1}
    results = write_run(
        root / "platform",
        [
            level("c=1", 1.0),
            level("c=4", 2.0, stream=False, errors=errors, cpu_cores=0.97),
        ],
    )
    baseline = write_run(
        root / "baseline",
        [level("c=1", 0.5, auth_ms=0.5), level("c=4", 1.0, stream=False, auth_ms=0.5)],
        mode="baseline",
    )
    report = write_report(results, baseline)
    return results, report.read_text()


def rows(report: str, section: str, level_name: str) -> list[list[str]]:
    """The cells of the rows for ``level_name`` in the markdown tables of ``## section``."""
    body = report.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in body.splitlines()
        if line.startswith(f"| {level_name} |")
    ]


def test_the_report_names_every_level_its_bottleneck_and_its_errors(platform):
    results, report = platform
    assert (results / "report.md").is_file()
    for name in ("c=1", "c=4"):
        assert rows(report, "Summary", name), name
        assert rows(report, "Outcome", name), name
    assert all("generate" in row[6] for row in rows(report, "Outcome", "c=4"))
    assert "UNAVAILABLE 3, DEADLINE_EXCEEDED 1" in report
    assert rows(report, "Outcome", "c=1")[0][2] == "none"
    assert "CPU-saturated at c=4" in report  # the generator itself was the bottleneck there


def test_a_unary_level_reads_na_for_ttft(platform):
    _, report = platform
    header = next(line for line in report.splitlines() if line.startswith("| level | sent"))
    ttft = [c.strip() for c in header.strip("|").split("|")].index("TTFT ms p50/p90/p99")
    assert rows(report, "Summary", "c=4")[0][ttft] == "n/a"
    assert rows(report, "Summary", "c=1")[0][ttft] == "90.0 / 135 / 180"
    for path in PATHS:  # per-path tables too
        assert f"### {path}" in report
    assert all(row[2] == "n/a" for row in rows(report, "Per path", "c=4"))


def test_overhead_is_platform_over_baseline_per_stage_and_end_to_end(platform):
    _, report = platform
    for name in ("c=1", "c=4"):
        by_stage = {row[0]: row for row in rows_of_overhead(report, name)}
        assert by_stage["generate"][3] == "2.00×"
        assert by_stage["auth"][3] == "4.00×"
        assert by_stage["auth"][4] == "1.50"  # added ms
        assert by_stage["e2el mean"][3] == "2.00×"
        assert by_stage["e2el p99"][3] == "2.00×"
        assert f"### {name}: e2el 2.00× the baseline" in report


def rows_of_overhead(report: str, level_name: str) -> list[list[str]]:
    """The rows (below header and rule) of the table under ``### <level>: e2el ...``."""
    table = report.split(f"### {level_name}: e2el", 1)[1].split("\n\n")[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_overhead_ratios_skip_levels_missing_from_the_baseline():
    platform = [level("c=1", 1.0), level("c=8", 4.0)]
    baseline = [level("c=1", 0.5, auth_ms=1.0)]
    [(name, ratios, _)] = overhead_ratios(platform, baseline)
    assert name == "c=1"
    assert ratios == pytest.approx(
        {"auth": 2.0, "route": 2.0, "retrieve": 2.0, "generate": 2.0, "e2el": 2.0}
    )


def test_the_figures_are_real_pngs(platform):
    results, report = platform
    names = [
        plots.LATENCY_THROUGHPUT,
        plots.LATENCY_BY_PATH,
        plots.STAGES,
        plots.GOODPUT,
        plots.OVERHEAD,
    ]
    for name in names:
        data = (results / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 10_000, name  # axes, labels and bars, not an empty canvas
        assert f"]({name})" in report  # and the report shows it


def test_without_a_baseline_there_is_no_overhead_section(tmp_path):
    results = write_run(tmp_path / "run", [level("c=1", 1.0)])
    report = write_report(results).read_text()
    assert "## Overhead" not in report
    assert not (results / plots.OVERHEAD).exists()


def test_records_with_no_ttft_and_a_level_where_everything_failed(tmp_path):
    """From ``stats.summarize`` itself: unary records only, then a level with 0 completed."""

    def summary(name: str, records: list[RequestRecord]) -> dict[str, Any]:
        return summarize(
            records,
            level=name,
            kind="rate",
            value=1.0,
            duration_s=10,
            slo_ttft_ms=0,
            slo_e2el_ms=2000,
            cpu_cores=0.2,
        )

    ok = [
        RequestRecord(
            level="rate=1.0",
            t_start=i,
            requested_path="auto",
            tenant=0,
            stream=False,
            path="RAG",
            e2el_ms=100.0 + i,
            output_tokens=16,
            cost_micro_usd=10,
            stages={"retrieve": 20.0, "generate": 70.0},
        )
        for i in range(5)
    ]
    failed = [
        RequestRecord(
            level="rate=9.0",
            t_start=i,
            requested_path="tuned",
            tenant=0,
            stream=True,
            code="RESOURCE_EXHAUSTED",
            error="queue full",
        )
        for i in range(3)
    ]
    levels = [summary("rate=1.0", ok), summary("rate=9.0", failed)]
    results = write_run(tmp_path / "run", levels)
    report = write_report(results).read_text()

    [row] = rows(report, "Summary", "rate=9.0")
    assert row[1:4] == ["3", "0", "3"]
    assert row[6:] == ["n/a"] * 4  # TTFT, TPOT, ITL, e2el
    assert "RESOURCE_EXHAUSTED 3" in report
    assert rows(report, "Summary", "rate=1.0")[0][6] == "n/a"  # unary: no TTFT
    for name in (plots.LATENCY_THROUGHPUT, plots.LATENCY_BY_PATH, plots.STAGES, plots.GOODPUT):
        assert (results / name).read_bytes()[:8] == PNG_MAGIC

    table = summary_table(levels)
    assert "rate=9.0" in table and "n/a" in table


def test_summary_table_is_fixed_width_with_a_cpu_warning():
    levels = [level("c=1", 1.0), level("c=4", 2.0, stream=False, cpu_cores=0.97)]
    lines = summary_table(levels).splitlines()
    header, first, second = lines[:3]
    assert header.split()[:3] == ["level", "sent", "fail"]
    assert first.split()[0] == "c=1" and "generate" in first
    assert header.index("e2el99") + len("e2el99") == first.index("600") + len("600")  # aligned
    assert second.split()[5:7] == ["n/a", "n/a"]  # TTFT p50, p99 of the unary level
    assert "CPU-saturated at c=4" in lines[-1]
