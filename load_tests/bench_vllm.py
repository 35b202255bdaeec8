"""ragtune's overhead over raw vLLM, in one run, on the dev model and its adapters:

* raw: vLLM's ``AsyncLLM`` in this process, prompts rendered and tokenized as ragtune does;
* service: the generation application on vLLM under a local Serve, called over gRPC
  (``GenerateStream``, HAProxy ingress);
* gateway: the whole local stack, the gateway's TUNED path (``AnswerStream``, explicit path
  and adapter: no retrieval).

Each at concurrency 1 and 16 with one adapter, and at 16 with requests spread over three
adapters and the base model (the gateway's TUNED path: the three adapters). Output lengths are fixed (``ignore_eos``), so every run decodes
the same tokens. Reports output tokens/s, time to first token p50/p99 and inter-token latency;
and the machine's CPU per output token split by process (vLLM's engine core and worker, the
replicas, HAProxy, the client): where the time goes when the ratio falls short. Writes JSON and
prints the service/raw tokens-per-second ratio (c=16, one adapter) last.

    python -m load_tests.bench_vllm [--requests 64] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil

from load_tests.bench_common import (
    add_out_dir,
    drive,
    free_port,
    internal_metadata,
    percentiles,
    write_result,
)
from load_tests.bench_generation import QUESTIONS, devmodel_dir
from ragtune.common.services import GATEWAY, GENERATION
from ragtune.deployment import DEV_KV_CACHE_BYTES
from ragtune.local import use_process_env

ADAPTERS = ["json-answer", "pirate", "tldr"]
MIXED = [*ADAPTERS, ""]  # "" is the base model

Stream = Callable[[int, str], AsyncIterator[tuple[str, int]]]  # (i, adapter) -> (delta, tokens)


def _role(process: psutil.Process) -> str:
    """What a process is, for the CPU breakdown (vLLM and Ray name their processes)."""
    if process.pid == os.getpid():
        return "benchmark (client; raw: vLLM's front end too)"
    cmd = " ".join(process.info["cmdline"] or [process.info["name"] or ""])
    for needle, role in (
        ("EngineCore", "vLLM engine core"),
        ("VLLM::Worker", "vLLM worker (the model)"),
        ("VllmWorker", "vLLM worker (the model)"),
        ("ServeReplica:generation", "generation replica (ragtune + vLLM front end)"),
        ("ServeReplica:gateway", "gateway replica"),
        ("haproxy", "HAProxy ingress"),
    ):
        if needle in cmd:
            return role
    return "other (Ray, other replicas)"


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by every process on the machine, with its role."""
    seen = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            times = process.cpu_times()
            seen[process.pid] = (_role(process), times.user + times.system)
        except psutil.Error:
            continue
    return seen


def cpu_per_token(before: dict, after: dict, tokens: int) -> dict[str, float]:
    """Milliseconds of CPU per output token, by role, between two ``cpu_seconds``."""
    used: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        used[role] = used.get(role, 0.0) + seconds - before.get(pid, (role, 0.0))[1]
    total = {role: s * 1000 / max(tokens, 1) for role, s in used.items() if s > 0.001}
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


async def measure(stream: Stream, adapters: list[str], n: int, concurrency: int) -> dict:
    """Drive ``n`` streams, ``concurrency`` at a time; tokens/s, TTFT and inter-token gaps,
    and the machine's CPU per output token by process role."""
    ttft, itl, tokens = [], [], 0
    before = cpu_seconds()

    def call(i: int):
        async def one() -> None:
            nonlocal tokens
            start = last = time.perf_counter()
            first = True
            async for delta, done_tokens in stream(i, adapters[i % len(adapters)]):
                now = time.perf_counter()
                if delta:
                    (ttft if first else itl).append(now - (start if first else last))
                    first, last = False, now
                tokens += done_tokens

        return one

    seconds, _ = await drive([call(i) for i in range(n)], concurrency)
    cpu = cpu_per_token(before, cpu_seconds(), tokens)
    return {
        "requests": n,
        "concurrency": concurrency,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / seconds,
        "ttft": percentiles(ttft),
        "inter_token": percentiles(itl),
        "cpu_ms_per_token": sum(cpu.values()),
        "cpu_ms_per_token_by_process": cpu,
    }


async def scenarios(stream: Stream, args, mixed: list[str] = MIXED) -> dict:
    await measure(stream, mixed, len(mixed), len(mixed))  # warm-up: every adapter once
    return {
        "c1": await measure(stream, ADAPTERS[:1], max(8, args.requests // 8), 1),
        "c16": await measure(stream, ADAPTERS[:1], args.requests, 16),
        "c16_mixed": await measure(stream, mixed, args.requests, 16),
    }


def raw_vllm(model: Path, args) -> dict:
    """AsyncLLM in this process, as ragtune's engine builds it (token-id prompts, LoRA)."""
    from transformers import AutoTokenizer
    from vllm import AsyncEngineArgs, SamplingParams
    from vllm.inputs import tokens_input
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    from ragtune.generation.backends.vllm_engine import one_worker_process_on_cpu
    from ragtune.generation.prompting import build_messages
    from ragtune.tuning.devmodel import DEV_BASE_NAME

    base = model / DEV_BASE_NAME
    tokenizer = AutoTokenizer.from_pretrained(base)
    loras = {
        name: LoRARequest(name, i + 1, str(model / "adapters" / name))
        for i, name in enumerate(ADAPTERS)
    }

    async def main() -> dict:
        engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(
                model=str(base), dtype="float32", enable_lora=True, max_lora_rank=64,
                max_loras=4, kv_cache_memory_bytes=DEV_KV_CACHE_BYTES,
                **one_worker_process_on_cpu({}),  # the process layout ragtune's engine uses
            )
        )  # fmt: skip

        async def stream(i: int, adapter: str) -> AsyncIterator[tuple[str, int]]:
            messages = build_messages(
                [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], []
            )
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer.encode(text, add_special_tokens=False)  # as VLLMEngine._render
            params = SamplingParams(
                max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True,
                output_kind=RequestOutputKind.DELTA,
            )  # fmt: skip
            async for out in engine.generate(
                tokens_input(ids, prompt=text),
                params,
                uuid.uuid4().hex,
                lora_request=loras.get(adapter),
            ):
                first = out.outputs[0]
                yield first.text, len(first.token_ids)

        try:
            return await scenarios(stream, args)
        finally:
            engine.shutdown()

    return asyncio.run(main())


def through_platform(model: Path, args) -> tuple[dict, dict]:
    """The generation service over gRPC, then the gateway's TUNED path, on one local stack."""
    import grpc

    from load_tests.bench_common import local_serve
    from ragtune.common.auth import create_key
    from ragtune.deployment import local_config
    from ragtune.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generation_pb2_grpc
    from ragtune.v1 import generation_pb2 as pb

    data = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    key = create_key(data / "keys.yaml", "bench")
    apps = local_config(data, grpc_port=free_port(), rerank=False, model_dir=model, engine="vllm")[
        "applications"
    ]
    sampling = common_pb2.SamplingParams(max_tokens=args.max_tokens, ignore_eos=True)
    question = [pb.ChatMessage(role="user", content=q) for q in QUESTIONS]

    with local_serve("haproxy", apps) as port:

        async def main() -> tuple[dict, dict]:
            async with grpc.aio.insecure_channel(f"localhost:{port}") as channel:
                generation = generation_pb2_grpc.GenerationStub(channel)
                gateway = gateway_pb2_grpc.GatewayStub(channel)

                async def service(i: int, adapter: str) -> AsyncIterator[tuple[str, int]]:
                    request = pb.GenerateRequest(
                        messages=[question[i % len(question)]], adapter=adapter, sampling=sampling
                    )
                    metadata = internal_metadata(GENERATION.name)
                    if adapter:
                        metadata.append(("multiplexed_model_id", adapter))
                    async for piece in generation.GenerateStream(request, metadata=metadata):
                        yield piece.delta, piece.completion_tokens

                async def tuned(i: int, adapter: str) -> AsyncIterator[tuple[str, int]]:
                    request = gateway_pb2.AnswerRequest(
                        question=QUESTIONS[i % len(QUESTIONS)],
                        path=common_pb2.PATH_TUNED,
                        adapter=adapter,
                        sampling=sampling,
                    )
                    metadata = [("application", GATEWAY.name), ("authorization", f"Bearer {key}")]
                    async for event in gateway.AnswerStream(request, metadata=metadata):
                        kind = event.WhichOneof("event")
                        if kind == "delta":
                            yield event.delta, 0
                        elif kind == "done":
                            yield "", event.done.usage.completion_tokens

                # TUNED always names an adapter: the gateway's mix is the three adapters.
                return await scenarios(service, args), await scenarios(tuned, args, ADAPTERS)

        return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="requests per scenario")
    parser.add_argument("--max-tokens", type=int, default=64, help="output tokens per request")
    add_out_dir(parser)
    args = parser.parse_args()
    use_process_env(local_ray=True)
    model = devmodel_dir()
    raw = raw_vllm(model, args)
    service, gateway = through_platform(model, args)
    result: dict[str, Any] = {"benchmark": "vllm", "max_tokens": args.max_tokens}
    result |= {"raw_vllm": raw, "generation_service": service, "gateway_tuned": gateway}
    ratio = service["c16"]["output_tokens_per_s"] / raw["c16"]["output_tokens_per_s"]
    result["service_raw_tokens_per_s_ratio"] = ratio
    result["added_ttft_p50_ms_c1"] = service["c1"]["ttft"]["p50_ms"] - raw["c1"]["ttft"]["p50_ms"]
    path = write_result("bench-vllm", result, args.out_dir)
    for name, runs in (("raw vLLM", raw), ("service", service), ("gateway TUNED", gateway)):
        for scenario, r in runs.items():
            print(
                f"{name:14} {scenario:9} {r['output_tokens_per_s']:7.0f} tokens/s  "
                f"TTFT p50 {r['ttft']['p50_ms']:6.1f} p99 {r['ttft']['p99_ms']:6.1f} ms  "
                f"inter-token p50 {r['inter_token']['p50_ms']:5.1f} ms  "
                f"CPU {r['cpu_ms_per_token']:.2f} ms/token"
            )
        top = runs["c16"]["cpu_ms_per_token_by_process"]
        print("  c16 CPU ms/token: " + ", ".join(f"{k} {v:.2f}" for k, v in top.items()))
    print(f"JSON: {path}")
    print(f"generation service/raw vLLM tokens/s ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
