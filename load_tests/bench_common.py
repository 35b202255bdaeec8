"""Shared pieces of the benchmarks: texts, a one-application Serve, a concurrent gRPC driver.

Every benchmark compares the service with the raw library on the same data in the same run and
writes JSON; its last line is the headline ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragtune.resources import DEMO_CORPUS, DEMO_QUESTIONS

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "datasets" / "scifact"


def texts(kind: str, n: int) -> list[str]:
    """``passages``: SciFact abstracts (title + text), else demo-corpus paragraphs;
    ``queries``: SciFact claims, else demo questions. Repeated to ``n`` if short."""
    if kind == "passages" and (SCIFACT / "corpus.jsonl").is_file():
        with (SCIFACT / "corpus.jsonl").open() as f:
            pool = [f"{r['title']} {r['text']}" for r in map(json.loads, f)][: 4 * n]
    elif kind == "queries" and (SCIFACT / "queries.jsonl").is_file():
        with (SCIFACT / "queries.jsonl").open() as f:
            pool = [r["text"] for r in map(json.loads, f)]
    elif kind == "passages":
        pool = [p for f in sorted(DEMO_CORPUS.glob("*.md")) for p in f.read_text().split("\n\n")]
    else:
        pool = DEMO_QUESTIONS.read_text().splitlines()
    pool = [t for t in pool if t.strip()]
    return [pool[i % len(pool)] for i in range(n)]


def internal_metadata(app: str) -> list[tuple[str, str]]:
    """Metadata of a direct gRPC call to an internal service of this benchmark's own Serve:
    its application and the platform's internal credential (``local_serve`` sets one)."""
    from ragtune.common.serving import INTERNAL_TOKEN_ENV, INTERNAL_TOKEN_HEADER

    return [("application", app), (INTERNAL_TOKEN_HEADER, os.environ[INTERNAL_TOKEN_ENV])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


INGRESS_CHOICES = ["haproxy", "proxy", "direct"]


def add_ingress(parser: argparse.ArgumentParser) -> None:
    """Every service benchmark's ``--ingress``: which way its gRPC calls reach the replica."""
    parser.add_argument(
        "--ingress", choices=INGRESS_CHOICES, default="haproxy",
        help="haproxy: Serve's HAProxy ingress on the gRPC port (ragtune serve's default); "
        "proxy: Serve's Python gRPC proxy; direct: the replica's own gRPC server, no proxy",
    )  # fmt: skip


def use_free_haproxy_ports() -> None:
    """HAProxy's stats and metrics listeners bind fixed ports (8404, 9101) unless told
    otherwise: give this run free ones, so it can run beside another ragtune."""
    os.environ.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))
    os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))


@contextmanager
def local_serve(ingress: str, applications: list[dict[str, Any]]) -> Iterator[int]:
    """A local Ray Serve with ``applications`` and the ingress of ``--ingress`` ("direct" runs
    HAProxy's, whose replicas have ports of their own); yields its gRPC port."""
    from ragtune.deployment import serve_config
    from ragtune.local import start_local, stop_local, use_process_env

    use_process_env(local_ray=True)
    use_free_haproxy_ports()
    # The internal services refuse gRPC calls without the internal credential: the benchmark
    # calls them directly, so its Serve (whose replicas inherit this environment) gets one.
    from ragtune.common.serving import INTERNAL_TOKEN_ENV

    os.environ.setdefault(INTERNAL_TOKEN_ENV, secrets.token_urlsafe(16))
    port = free_port()
    config = serve_config(applications, grpc_port=port, http_port=free_port())
    ray_tmp = tempfile.mkdtemp(prefix="rtb", dir="/tmp")
    try:
        start_local(config, temp_dir=ray_tmp, ingress="proxy" if ingress == "proxy" else "haproxy")
        yield port
    finally:
        stop_local()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def direct_target(app: str, timeout_s: float = 60) -> str:
    """The first replica of ``app``'s own gRPC server (``--ingress direct``)."""
    from ragtune.local import direct_grpc_targets

    deadline = time.monotonic() + timeout_s
    while not (targets := direct_grpc_targets().get(app)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no direct-ingress gRPC port for {app}")
        time.sleep(0.5)
    return targets[0]


@contextmanager
def serve_app(spec: Any, args: dict[str, Any], *, ingress: str = "haproxy") -> Iterator[str]:
    """Run the application of one service (a ``ServiceSpec``) under a local Serve; yields the
    gRPC target: the gRPC port (HAProxy or Serve's proxy), or with ``ingress="direct"`` the
    replica's own gRPC server."""
    from ragtune.deployment import app_entry

    with local_serve(ingress, [app_entry(spec, args, num_cpus=0.5)]) as port:
        yield direct_target(spec.name) if ingress == "direct" else f"localhost:{port}"


async def drive(
    calls: Sequence[Callable[[], Awaitable[Any]]], concurrency: int
) -> tuple[float, list[float]]:
    """Run ``calls`` with at most ``concurrency`` in flight; (seconds, per-call latencies)."""
    latencies: list[float] = []
    queue = list(reversed(calls))

    async def worker() -> None:
        while queue:
            call = queue.pop()
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


def percentiles(latencies: Sequence[float]) -> dict[str, float]:
    qs = statistics.quantiles(latencies, n=100)
    return {"p50_ms": qs[49] * 1000, "p99_ms": qs[98] * 1000}


def add_out_dir(parser: argparse.ArgumentParser) -> None:
    """Every benchmark's ``--out-dir``: where its JSON result goes."""
    parser.add_argument("--out-dir", type=Path, default=REPO / "results",
                        help="folder for the JSON result (default: results/)")  # fmt: skip


def write_result(name: str, result: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
