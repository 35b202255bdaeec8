"""What each ingress costs per call: a trivial RPC through every way a call can reach a replica.

The RPC is ``Embedding/Embed`` answered by a stub deployment that returns a fixed 384-float
vector (no model), so the figures are the transport's alone: ``--concurrency`` closed-loop
clients in this process, and the CPU of every process on the machine counted while they run.

- ``plain``: a plain ``grpc.aio`` server in a child process (no Ray): the floor;
- ``haproxy``: Serve's HAProxy ingress on the gRPC port (``ragtune serve``'s default);
- ``proxy``: Serve's Python gRPC proxy;
- ``direct``: the replica's own gRPC server (what HAProxy forwards to).

Each Serve mode runs in a fresh child process, because Ray reads the ingress from the
environment when it starts. Prints calls/s and CPU per call for each, writes JSON, and ends
with the HAProxy/proxy throughput ratio.

    python -m load_tests.bench_ingress [--calls 4000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

import psutil

from load_tests.bench_common import add_out_dir, direct_target, free_port, local_serve, write_result
from ragtune.local import use_process_env

MODES = ["plain", "haproxy", "proxy", "direct"]
VECTOR = [0.1] * 384


class Stub:
    """Answers Embed at once: what is measured is everything around the service."""

    async def Embed(self, request, context=None):
        from ragtune.v1 import embedding_pb2

        return embedding_pb2.EmbedResponse(vectors=[embedding_pb2.Vector(values=VECTOR)], dims=384)


def machine_cpu_seconds() -> float:
    total = 0.0
    for process in psutil.process_iter():
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += times.user + times.system
    return total


async def load(target: str, calls: int, concurrency: int) -> dict[str, float]:
    import grpc

    from ragtune.v1 import embedding_pb2, embedding_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = embedding_pb2_grpc.EmbeddingStub(channel)
        metadata = [("application", "stub")]
        request = embedding_pb2.EmbedRequest(texts=["hello"])

        async def client(n: int) -> None:
            for _ in range(n):
                await stub.Embed(request, metadata=metadata, timeout=60)

        await asyncio.gather(*(client(20) for _ in range(concurrency)))  # warm-up
        cpu, start = machine_cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(client(calls // concurrency) for _ in range(concurrency)))
        seconds, cpu = time.perf_counter() - start, machine_cpu_seconds() - cpu
    done = calls // concurrency * concurrency
    return {"calls_per_s": done / seconds, "cpu_ms_per_call": 1000 * cpu / done,
            "cores_busy": cpu / seconds}  # fmt: skip


async def serve_plain(port: int) -> None:
    import grpc

    from ragtune.v1 import embedding_pb2_grpc

    server = grpc.aio.server()
    embedding_pb2_grpc.add_EmbeddingServicer_to_server(Stub(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def run_mode(mode: str, calls: int, concurrency: int) -> dict[str, float]:
    """One mode, measured in this (child) process."""
    if mode == "plain":
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", f"import asyncio; from load_tests.bench_ingress import "
             f"serve_plain; asyncio.run(serve_plain({port}))"],
        )  # fmt: skip
        try:
            time.sleep(3)
            return asyncio.run(load(f"127.0.0.1:{port}", calls, concurrency))
        finally:
            server.kill()

    from ray import serve

    with local_serve(mode, []) as port:
        app = serve.deployment(Stub, name="Stub", max_ongoing_requests=128,
                               ray_actor_options={"num_cpus": 0.5})  # fmt: skip
        serve.run(app.bind(), name="stub", route_prefix="/stub")
        target = direct_target("stub") if mode == "direct" else f"localhost:{port}"
        time.sleep(2)  # HAProxy health-checks the new replica before it routes to it
        return asyncio.run(load(target, calls, concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one child's mode
    add_out_dir(parser)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.calls, args.concurrency)))
        return
    use_process_env(local_ray=True)
    result: dict = {"calls": args.calls, "concurrency": args.concurrency}
    for mode in MODES:
        child = subprocess.run(
            [sys.executable, "-m", "load_tests.bench_ingress", "--mode", mode,
             "--calls", str(args.calls), "--concurrency", str(args.concurrency)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if child.returncode != 0:
            sys.exit(f"{mode} failed:\n{child.stderr[-3000:]}")
        result[mode] = json.loads(child.stdout.strip().splitlines()[-1])
        r = result[mode]
        print(f"{mode:8s} {r['calls_per_s']:7.0f} calls/s  {r['cpu_ms_per_call']:5.2f} ms CPU per "
              f"call (all processes; {r['cores_busy']:.2f} cores busy)", flush=True)  # fmt: skip
    ratio = result["haproxy"]["calls_per_s"] / result["proxy"]["calls_per_s"]
    result["haproxy_vs_proxy_throughput"] = ratio
    path = write_result("bench-ingress", result, args.out_dir)
    print(f"(JSON: {path})")
    print(f"ingress haproxy/proxy throughput ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
