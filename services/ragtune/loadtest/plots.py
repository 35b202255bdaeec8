"""The report's figures (``report.write_report``), one PNG each, drawn with matplotlib's Agg canvas.

matplotlib is an optional dependency (the ``load`` extra): this module imports it inside
``draw_all`` so ``ragtune.loadtest`` imports without it. Figures are built on ``Figure`` objects
rather than through ``pyplot``, whose global state and interactive backends a headless run needs
neither of.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Level = dict[str, Any]

PATH_COLOURS = {"RAG": "tab:blue", "TUNED": "tab:orange", "HYBRID": "tab:green"}
PERCENTILE_STYLES: dict[str, Literal["-", "--", ":"]] = {"p50": "-", "p90": "--", "p99": ":"}
UNATTRIBUTED = "unattributed (e2el − stages)"

LATENCY_THROUGHPUT = "latency_throughput.png"
LATENCY_BY_PATH = "latency_by_path.png"
STAGES = "stages.png"
GOODPUT = "goodput.png"
OVERHEAD = "overhead.png"


def stage_order(levels: Sequence[Level]) -> list[str]:
    """Stages in the order they first appear (the gateway reports them in the order they ran)."""
    order: list[str] = []
    for level in levels:
        order += [s for s in ((level.get("stages") or {}).get("mean_ms") or {}) if s not in order]
    return order


def percentile(dist: dict[str, float] | None, key: str) -> float | None:
    return None if not dist else dist.get(key)


def draw_all(
    out: Path,
    levels: Sequence[Level],
    overhead: Sequence[tuple[str, dict[str, float | None]]],
    *,
    saturation: str | None = None,
) -> list[str]:
    """Writes the figures into ``out``, the overhead one only with ratios; returns their file
    names. ``saturation``: the level a sweep named its saturation point, ringed on the plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def save(name: str, draw: Callable[[Figure], None], size: tuple[float, float]) -> str:
        figure = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(figure)
        draw(figure)
        figure.savefig(out / name, dpi=110)
        return name

    written = [
        save(LATENCY_THROUGHPUT, lambda f: _latency_throughput(f, levels, saturation), (11, 4.5)),
        save(LATENCY_BY_PATH, lambda f: _latency_by_path(f, levels), (11, 4.5)),
        save(STAGES, lambda f: _stages(f, levels), (9, 5)),
        save(GOODPUT, lambda f: _goodput(f, levels), (8, 4.5)),
    ]
    if overhead:
        written.append(save(OVERHEAD, lambda f: _overhead(f, overhead), (9, 4.5)))
    return written


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _latency_throughput(
    figure: Figure, levels: Sequence[Level], saturation: str | None = None
) -> None:
    """End-to-end latency against what the level achieved, in requests and in output tokens: the
    knee where latency climbs while throughput stalls is the saturation point."""
    axes = figure.subplots(1, 2, sharey=True)
    for ax, key, xlabel in (
        (axes[0], "request_throughput", "request throughput (completed req/s)"),
        (axes[1], "output_token_throughput", "output token throughput (tok/s)"),
    ):
        points = [
            (level[key], level["latency"].get("e2el_ms"), level["level"])
            for level in levels
            if level.get(key) is not None and (level.get("latency") or {}).get("e2el_ms")
        ]
        if not points:
            _no_data(ax, "n/a: no completed requests")
            continue
        for name, style in PERCENTILE_STYLES.items():
            ax.plot(
                [x for x, _, _ in points],
                [dist[name] for _, dist, _ in points],
                style,
                marker="o",
                label=f"e2el {name}",
            )
        for x, dist, label in points:  # name each point after its level
            ax.annotate(
                label, (x, dist["p99"]), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
            if label == saturation:
                ax.axvline(
                    x, color="tab:red", linewidth=1, linestyle="-.", label="saturation point"
                )
        ax.set_xlabel(xlabel)
        ax.margins(0.12)  # room for the level names at the extremes
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("end-to-end latency (ms)")
    if axes[0].lines:
        axes[0].legend(loc="upper left")
    figure.suptitle("Latency vs throughput (one point per load level)")


def _latency_by_path(figure: Figure, levels: Sequence[Level]) -> None:
    """TTFT and end-to-end percentiles per path: colour is the path, line style the percentile."""
    from matplotlib.lines import Line2D

    names = [level["level"] for level in levels]
    paths = sorted({p for level in levels for p in (level.get("per_path") or {})})
    colours = dict(zip(paths, _palette(len(paths)), strict=True)) | PATH_COLOURS
    axes = figure.subplots(1, 2)
    for ax, metric, title in (
        (axes[0], "ttft_ms", "time to first token"),
        (axes[1], "e2el_ms", "end-to-end latency"),
    ):
        ax.set_title(title)
        seen: set[int] = set()
        for path in paths:
            for name, style in PERCENTILE_STYLES.items():
                ys = [
                    percentile(((level.get("per_path") or {}).get(path) or {}).get(metric), name)
                    for level in levels
                ]
                xs = [i for i, y in enumerate(ys) if y is not None]
                seen.update(xs)
                ax.plot(xs, [ys[i] for i in xs], style, marker="o", color=colours[path])
        if not seen:
            why = "unary requests have no TTFT" if metric == "ttft_ms" else "no completed requests"
            _no_data(ax, f"n/a: {why}")
            continue
        for i in sorted(set(range(len(names))) - seen):  # a level without the figure says so
            ax.annotate(
                "n/a", (i, 0.5), xycoords=("data", "axes fraction"), ha="center", color="grey"
            )
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_xlabel("load level")
        ax.set_ylabel(f"{title} (ms)")
        ax.grid(alpha=0.3)
        # Two small legends rather than one entry per (path, percentile) pair.
        by_path = [Line2D([], [], color=colours[p], marker="o", label=p) for p in paths]
        by_percentile = [
            Line2D([], [], color="black", linestyle=style, label=name)
            for name, style in PERCENTILE_STYLES.items()
        ]
        ax.add_artist(ax.legend(handles=by_path, title="path", loc="upper left", fontsize=8))
        ax.legend(handles=by_percentile, title="percentile", loc="upper right", fontsize=8)
        ax.margins(y=0.3)  # headroom for the legends
        ax.set_ylim(bottom=0)
    figure.suptitle("Latency percentiles per path and load level")


def _stages(figure: Figure, levels: Sequence[Level]) -> None:
    """Mean milliseconds per stage stacked per level; what the stages do not cover (the client,
    gRPC, Serve's proxy, queueing before the gateway) stacked on top, hatched."""
    ax = figure.subplots()
    stages = stage_order(levels)
    if not stages:
        _no_data(ax, "n/a: no stage timings (no completed requests)")
        return
    names = [level["level"] for level in levels]
    means = [(level.get("stages") or {}).get("mean_ms") or {} for level in levels]
    bottom = [0.0] * len(levels)
    for stage, colour in zip(stages, _palette(len(stages)), strict=True):
        heights = [m.get(stage, 0.0) for m in means]
        ax.bar(names, heights, bottom=bottom, label=stage, color=colour)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    e2el = [percentile((level.get("latency") or {}).get("e2el_ms"), "mean") for level in levels]
    rest = [
        max((e or 0.0) - b, 0.0) if m else 0.0 for e, b, m in zip(e2el, bottom, means, strict=True)
    ]
    if any(rest):
        ax.bar(
            names,
            rest,
            bottom=bottom,
            label=UNATTRIBUTED,
            color="white",
            edgecolor="grey",
            hatch="//",
        )
    for i, level in enumerate(levels):
        bottleneck = (level.get("stages") or {}).get("bottleneck")
        if not means[i]:
            ax.annotate(
                "n/a: no OK request",
                (i, 0),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=8,
                color="grey",
            )
        elif bottleneck:
            ax.annotate(
                f"bottleneck:\n{bottleneck}",
                (i, bottom[i] + rest[i]),
                textcoords="offset points",
                xytext=(0, 3),
                ha="center",
                fontsize=8,
            )
    ax.set_xlabel("load level")
    ax.set_ylabel("mean time per request (ms)")
    ax.set_title("Where a request's time goes, per load level")
    ax.margins(y=0.15)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _goodput(figure: Figure, levels: Sequence[Level]) -> None:
    """Share of sent requests that succeeded within the SLOs, next to the share that failed."""
    ax = figure.subplots()
    names = [level["level"] for level in levels]
    good = [100 * ((level.get("goodput") or {}).get("share") or 0.0) for level in levels]
    failed = [
        100 * level.get("failed", 0) / level["sent"] if level.get("sent") else 0.0
        for level in levels
    ]
    xs = range(len(names))
    width = 0.4
    for offset, values, label, colour in (
        (-width / 2, good, "goodput (OK within SLO)", "tab:green"),
        (width / 2, failed, "failed (gRPC error)", "tab:red"),
    ):
        bars = ax.bar([x + offset for x in xs], values, width, label=label, color=colour)
        ax.bar_label(bars, fmt="%.0f%%", fontsize=8)
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 125)  # the legend sits above 100%
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("load level")
    ax.set_ylabel("share of requests sent (%)")
    ax.set_title(f"Goodput per load level ({slo_text(levels)})")
    ax.legend(loc="upper center", ncols=2, fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def slo_text(levels: Sequence[Level]) -> str:
    """The SLOs goodput was measured against, as the first level states them."""
    goodput = (levels[0].get("goodput") or {}) if levels else {}
    parts = [
        f"{label} ≤ {goodput[key]:g} ms"
        for key, label in (("ttft_ms", "TTFT"), ("e2el_ms", "e2el"))
        if goodput.get(key)
    ]
    return ", ".join(parts) or "no latency SLO"


def _overhead(figure: Figure, overhead: Sequence[tuple[str, dict[str, float | None]]]) -> None:
    """Platform / baseline per stage and end to end, one bar per level; 1.0 is no overhead."""
    ax = figure.subplots()
    rows: list[str] = []
    for _, ratios in overhead:
        rows += [r for r in ratios if r not in rows]
    width = 0.8 / len(overhead)
    for i, (level, ratios) in enumerate(overhead):
        xs = [j + (i - (len(overhead) - 1) / 2) * width for j in range(len(rows))]
        heights = [ratios.get(r) or 0.0 for r in rows]
        bars = ax.bar(xs, heights, width, label=level)
        labels = [
            f"{h:.2f}" if ratios.get(r) is not None else "n/a"
            for r, h in zip(rows, heights, strict=True)
        ]
        ax.bar_label(bars, labels=labels, fontsize=7)
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--", label="baseline (1.0)")
    ax.set_xticks(range(len(rows)), rows)
    ax.set_xlabel("stage (mean ms) and end-to-end latency")
    ax.set_ylabel("platform / baseline (×)")
    ax.set_title("Overhead of gRPC + Serve over the in-process baseline")
    # A cheap stage (auth, route) can be 50× its baseline while the end to end is 1.2×: a log
    # scale keeps both readable.
    largest = max((r or 0.0 for _, ratios in overhead for r in ratios.values()), default=0.0)
    if largest > 10:
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter("{x:g}×")
    ax.margins(y=0.15)
    ax.legend(title="load level", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
