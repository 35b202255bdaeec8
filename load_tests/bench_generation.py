"""Generation service: adapter load latency, and one adapter vs a mix of adapters + base.

Runs the generation application under a local Serve over the dev model (``ragtune devmodel``)
and drives it through Serve's gRPC proxy:

* adapter load time: LoadAdapter + UnloadAdapter of one adapter, repeated; p50/p99 of the
  engine's load time and of the whole RPC;
* throughput: the same number of streaming requests at the same concurrency, all for one
  adapter, then spread over 4 adapters + the base model (PEFT mixed-adapter batches); output
  lengths are fixed (``ignore_eos``) so both runs decode the same number of tokens;
* time to first token and inter-token latency of each run.

Prints the mixed/single tokens-per-second ratio on its last line and writes JSON.

    python -m load_tests.bench_generation [--requests 64] [--concurrency 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from load_tests.bench_common import (
    REPO,
    add_out_dir,
    drive,
    internal_metadata,
    percentiles,
    serve_app,
    write_result,
)
from ragtune.common.services import GENERATION
from ragtune.deployment import DEFAULT_ENGINE, ENGINES, dev_generation_args
from ragtune.local import use_process_env

QUESTIONS = ["Tell me about the Lyon office", "Tell me about Kestrel", "What is the warranty?"]


def devmodel_dir() -> Path:
    import subprocess
    import sys

    out = REPO / "data" / "devmodel"
    subprocess.run(
        [sys.executable, "-m", "ragtune.cli", "devmodel", "--if-missing", "--out", str(out)],
        check=True,
    )
    return out


async def load_times(stub, pb, source: str, rounds: int) -> dict[str, dict[str, float]]:
    engine_ms, rpc_ms = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        reply = await stub.LoadAdapter(
            pb.LoadAdapterRequest(name="bench-load", source=source),
            metadata=internal_metadata(GENERATION.name),
        )
        rpc_ms.append((time.perf_counter() - start) * 1000)
        engine_ms.append(reply.load_ms)
        await stub.UnloadAdapter(
            pb.UnloadAdapterRequest(name="bench-load"), metadata=internal_metadata(GENERATION.name)
        )

    def summary(values: list[float]) -> dict[str, float]:
        qs = statistics.quantiles(values, n=100)
        return {"p50_ms": qs[49], "p99_ms": qs[98]}

    return {"engine_load": summary(engine_ms), "load_rpc": summary(rpc_ms)}


async def stream_run(stub, pb, common_pb2, adapters, n: int, concurrency: int, max_tokens: int):
    ttft, itl, tokens = [], [], 0

    def call(i: int):
        async def one() -> None:
            nonlocal tokens
            request = pb.GenerateRequest(
                messages=[pb.ChatMessage(role="user", content=QUESTIONS[i % len(QUESTIONS)])],
                adapter=adapters[i % len(adapters)],
                sampling=common_pb2.SamplingParams(max_tokens=max_tokens, ignore_eos=True),
            )
            start = last = time.perf_counter()
            first = True
            async for piece in stub.GenerateStream(
                request, metadata=internal_metadata(GENERATION.name)
            ):
                now = time.perf_counter()
                if piece.delta:
                    (ttft if first else itl).append(now - (start if first else last))
                    first, last = False, now
                if piece.finish_reason:
                    tokens += piece.completion_tokens

        return one

    seconds, _ = await drive([call(i) for i in range(n)], concurrency)
    return {
        "requests": n,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "ttft": percentiles(ttft),
        "inter_token": percentiles(itl),
    }


async def run(target: str, model: Path, args) -> dict:
    import grpc

    from ragtune.v1 import common_pb2, generation_pb2_grpc
    from ragtune.v1 import generation_pb2 as pb

    async with grpc.aio.insecure_channel(target) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        pirate = str(model / "adapters" / "pirate")
        # A fourth adapter: pirate's weights under another name (a separate LoRA slot).
        await stub.LoadAdapter(
            pb.LoadAdapterRequest(name="pirate-2", source=pirate),
            metadata=internal_metadata(GENERATION.name),
        )
        loads = await load_times(stub, pb, pirate, args.load_rounds)
        warm = ["json-answer", "pirate", "tldr", "pirate-2", ""]
        await stream_run(stub, pb, common_pb2, warm, len(warm), len(warm), 4)
        single = await stream_run(
            stub, pb, common_pb2, ["json-answer"], args.requests, args.concurrency, args.max_tokens
        )
        mixed = await stream_run(
            stub,
            pb,
            common_pb2,
            ["json-answer", "pirate", "tldr", "pirate-2", ""],
            args.requests,
            args.concurrency,
            args.max_tokens,
        )
    return {"adapter_load": loads, "single_adapter": single, "mixed_4_adapters_and_base": mixed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="requests per run (default 64)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--load-rounds", type=int, default=20, help="adapter load/unload rounds")
    parser.add_argument(
        "--engine", choices=ENGINES, default=DEFAULT_ENGINE, help="default: %(default)s"
    )
    add_out_dir(parser)
    args = parser.parse_args()
    use_process_env(local_ray=True)

    model = devmodel_dir()
    app_args = dev_generation_args(model, args.engine)
    with serve_app(GENERATION, app_args) as target:
        result = asyncio.run(run(target, model, args))
    single = result["single_adapter"]["tokens_per_s"]
    mixed = result["mixed_4_adapters_and_base"]["tokens_per_s"]
    result.update(
        benchmark="generation",
        engine=args.engine,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        ratio=mixed / single,
    )
    path = write_result(f"bench-generation-{args.engine}", result, args.out_dir)
    loads = result["adapter_load"]["engine_load"]
    print(f"adapter load: p50 {loads['p50_ms']:.0f} ms, p99 {loads['p99_ms']:.0f} ms")
    for name in ("single_adapter", "mixed_4_adapters_and_base"):
        r = result[name]
        print(
            f"{name}: {r['tokens_per_s']:.0f} tokens/s, TTFT p50 {r['ttft']['p50_ms']:.0f} ms "
            f"p99 {r['ttft']['p99_ms']:.0f} ms, inter-token p50 {r['inter_token']['p50_ms']:.1f} ms"
        )
    print(f"JSON: {path}")
    print(f"generation mixed/single throughput ratio: {mixed / single:.2f}")


if __name__ == "__main__":
    main()
