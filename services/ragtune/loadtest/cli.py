"""``ragtune-load`` (also ``python -m load_tests``): run a workload, turn results into a report.

ragtune-load run load_tests/workloads/smoke.yaml --out results/load/platform
ragtune-load run load_tests/workloads/smoke.yaml --baseline --out results/load/baseline
ragtune-load report results/load/platform --baseline results/load/baseline
ragtune-load chaos --out results/chaos
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from ragtune.deployment import DEFAULT_ENGINE
from ragtune.loadtest.callers import CallError, GrpcCaller
from ragtune.loadtest.runner import Runner
from ragtune.loadtest.workload import Workload


def _overrides(workload: Workload, args: argparse.Namespace) -> Workload:
    data = workload.model_dump()
    load = data["load"]
    if args.target:
        data["target"] = args.target
    if args.api_key:
        data["tenants"] = [{"key": args.api_key}]
    if args.mode:
        load["mode"] = args.mode
    if args.concurrency:
        load["concurrency"] = [int(c) for c in args.concurrency.split(",")]
    if args.rates:
        load["rates"] = [float(r) for r in args.rates.split(",")]
    if args.duration is not None:
        load["duration_s"] = args.duration
    if args.requests is not None:
        load["requests"] = args.requests
    if args.no_stream:
        data["stream"] = False
    return Workload.model_validate(data)


async def _run(
    workload: Workload, args: argparse.Namespace, out: Path, console: Console, *, baseline: bool
) -> dict[str, Any]:
    base = Path(args.base_dir)
    if baseline:
        from ragtune.local import use_process_env

        use_process_env()  # the models the baseline loads are local files
        from ragtune.loadtest.baseline import in_process_gateway

        console.print(f"starting the baseline in this process from {args.data_dir} ...")
        async with in_process_gateway(Path(args.data_dir), engine=args.engine) as caller:
            runner = Runner(
                workload, caller, out, base=base, mode="baseline", target="in-process",
                console=console,
            )  # fmt: skip
            return await runner.run()
    grpc_caller = GrpcCaller(workload.target, application=workload.application, tls=workload.tls)
    try:
        await grpc_caller.wait_ready(10)
        return await Runner(workload, grpc_caller, out, base=base, console=console).run()
    finally:
        await grpc_caller.close()


def _print_run(run: dict[str, Any], out: Path) -> None:
    from ragtune.loadtest.report import summary_table

    print(f"{run['mode']} ({run['target']}):")
    print(summary_table(run["levels"]))
    if run.get("saturation"):
        s = run["saturation"]
        print(f"saturation: {s.get('level')} ({s.get('reason')})")
    print(f"results: {out}")


def _unreachable(exc: CallError, workload: Workload, console: Console) -> int:
    console.print(
        f"ragtune-load: {exc} at {workload.target}: is the platform running there? "
        "(`make run` starts it locally)"
    )
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    workload = _overrides(Workload.load_file(args.workload), args)
    try:
        run = asyncio.run(_run(workload, args, args.out, console, baseline=args.baseline))
    except CallError as exc:
        return _unreachable(exc, workload, console)
    _print_run(run, args.out)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """The platform (sweep or levels as the workload says), then the baseline at the levels
    the platform ran, then the report with the overhead ratios: what `make load` runs."""
    from ragtune.loadtest.report import write_report

    console = Console(stderr=True)
    workload = _overrides(Workload.load_file(args.workload), args)
    platform_dir, baseline_dir = args.out / "platform", args.out / "baseline"
    try:
        platform = asyncio.run(_run(workload, args, platform_dir, console, baseline=False))
    except CallError as exc:
        return _unreachable(exc, workload, console)
    _print_run(platform, platform_dir)
    data = workload.model_dump()
    kinds = {lv["kind"] for lv in platform["levels"]}
    values = [lv["value"] for lv in platform["levels"]]
    if kinds == {"rate"}:
        data["load"].update(mode="open", rates=values)
    else:
        data["load"].update(mode="closed", concurrency=[int(v) for v in values])
    baseline = asyncio.run(
        _run(Workload.model_validate(data), args, baseline_dir, console, baseline=True)
    )
    _print_run(baseline, baseline_dir)
    print(f"report: {write_report(platform_dir, baseline_dir)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ragtune.loadtest.report import write_report

    path = write_report(args.results, args.baseline)
    print(f"report: {path}")
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    """Kill a replica of each service under load (docs/security.md#chaos-under-load)."""
    import json

    from ragtune.local import use_process_env

    # It joins the local stack's Ray, which runs single-node on loopback: Ray reads that
    # switch when it is imported, so it is set first (`make chaos` exports it too).
    use_process_env(local_ray=True)
    import ray

    from ragtune.loadtest.chaos import ChaosSettings, passed, run_chaos, table

    key = args.api_key or Path(args.key_file).read_text().strip()
    settings = ChaosSettings(
        services=args.services.split(","),
        users=args.users,
        warmup_s=args.warmup,
        settle_s=args.settle,
        ingest_interval_s=args.ingest_interval,
    )
    # The replicas' processes come from the Ray cluster of the stack (`make run`'s by default).
    ray.init(address=args.ray_address, namespace="serve", log_to_driver=False)
    try:
        result = asyncio.run(run_chaos(args.target, key, settings))
    except CallError as exc:
        print(f"ragtune-load: {exc} at {args.target}: is the platform running there? "
              "(`make run` starts it locally)", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        ray.shutdown()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    problems = passed(result, recovery_limit_s=args.recovery_limit)
    for problem in problems:
        print(f"FAILED: {problem}")
    s = result["summary"]
    print(f"results: {args.out / 'chaos.json'}")
    print(f"chaos idempotent failures: {s['idempotent_failures']}, lost writes: "
          f"{s['lost_writes']} of {s['writes_acknowledged']}")  # fmt: skip
    print(f"chaos max recovery s: {s['max_recovery_s'] or 0:.2f}")
    return 1 if problems else 0


def run_options(p: argparse.ArgumentParser, *, baseline: bool) -> None:
    p.add_argument("workload", type=Path, help="workload YAML (load_tests/workloads/)")
    p.add_argument("--out", type=Path, required=True, help="results folder to write")
    p.add_argument("--target", help="gateway host:port (overrides the workload's)")
    p.add_argument("--api-key", help="one tenant with this key (overrides the workload's)")
    p.add_argument("--mode", choices=["closed", "open", "sweep"], help="override load.mode")
    p.add_argument("--concurrency", help="closed-loop levels, e.g. 1,2,4")
    p.add_argument("--rates", help="open-loop arrival rates per second, e.g. 0.5,1")
    p.add_argument("--duration", type=float, help="seconds per level")
    p.add_argument("--requests", type=int, help="requests per level (ends a level early)")
    p.add_argument("--no-stream", action="store_true", help="unary Answer instead of the stream")
    p.add_argument(
        "--base-dir", default=".", help="folder relative paths in the workload start from"
    )
    if baseline:
        p.add_argument(
            "--baseline",
            action="store_true",
            help="run in this process against the same backends, no gRPC and no Serve "
            "(built from --data-dir as `ragtune serve` would)",
        )
    p.add_argument("--data-dir", default="data", help="the local stack's data (for the baseline)")
    p.add_argument("--engine", default=DEFAULT_ENGINE, help="generation engine of the baseline")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragtune-load",
        description="Load-test a ragtune gateway: closed/open loop and sweeps over Answer and "
        "AnswerStream, with TTFT, TPOT, ITL, end-to-end percentiles, goodput, route mix, "
        "cost and per-stage breakdown per path (docs/load-testing.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a workload (YAML) and write a results folder")
    run_options(p, baseline=True)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser(
        "compare",
        help="run on the platform, then the baseline at the same levels, then the report "
        "(OUT/platform, OUT/baseline, OUT/platform/report.md): `make load`",
    )
    run_options(p, baseline=False)
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser(
        "chaos",
        help="SIGKILL a replica of each service under steady traffic; failures, recovery, "
        "lost writes (OUT/chaos.json)",
        description="Chaos under load (docs/security.md#chaos-under-load). While closed-loop "
        "RAG Answers, GetCollection/ListCollections reads and one Ingest per interval run "
        "through the gateway's public port (idempotent RPCs with the documented client's retry "
        "policy), SIGKILL one replica of each service in turn (embedding, retrieval, rerank, "
        "generation, gateway), each after the previous one recovered. Reports per service the "
        "failures by gRPC code (idempotent RPCs apart from Answer), the recovery time (kill -> "
        "Serve runs a new replica and an Answer sent after the kill succeeded), and how many "
        "acknowledged documents a RAG answer filtered to each one still cites. Joins the "
        "stack's Ray cluster to find the replicas' processes: run it on the stack's machine. "
        "Exits 1 when an idempotent call failed, a recovery took longer than "
        "--recovery-limit, or an acknowledged write was lost.",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for chaos.json")
    p.add_argument("--target", default="localhost:9000", help="the gateway's host:port")
    p.add_argument("--api-key", help="the tenant key to send with (default: --key-file's)")
    p.add_argument("--key-file", default="data/dev-api-key", help="a file holding the key")
    p.add_argument(
        "--ray-address", default="auto",
        help="the stack's Ray cluster (default: the one running on this machine)",
    )  # fmt: skip
    p.add_argument(
        "--services", default="embedding,retrieval,rerank,generation,gateway",
        help="services to kill a replica of, in order",
    )  # fmt: skip
    p.add_argument("--users", type=int, default=2, help="closed-loop Answer users")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before the first kill")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after each recovery")
    p.add_argument("--ingest-interval", type=float, default=1.0, help="seconds between Ingests")
    p.add_argument(
        "--recovery-limit", type=float, default=30.0, help="slowest acceptable recovery, s"
    )
    p.set_defaults(func=cmd_chaos)
    p = sub.add_parser("report", help="write report.md and plots for a results folder")
    p.add_argument("results", type=Path, help="a results folder of `run`")
    p.add_argument("--baseline", type=Path, help="a baseline results folder: overhead ratios")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        print(f"ragtune-load: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ragtune-load: interrupted; the levels that finished are in the results folder",
              file=sys.stderr)  # fmt: skip
        return 130


if __name__ == "__main__":
    sys.exit(main())
