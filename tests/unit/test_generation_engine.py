"""Continuous batching, mixed adapters, hot swap, cancellation and the adapter registry, on the
transformers engine and the dev model (no Ray). Outputs are checked, not assumed. Also the
pieces both engines share (backends/shared.py)."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time

import pytest
import yaml

from ragtune.common.errors import InvalidArgument, NotFound, Unavailable
from ragtune.generation.backends.shared import Outbox, adapter_load_failed, translated
from ragtune.v1 import common_pb2
from ragtune.v1 import generation_pb2 as pb
from tests.conftest import make_generation_service, run

# What each adapter was trained to do to the base model's answer.
STYLE = {
    "": lambda text: not text.startswith(("{", "Ahoy", "TL;DR")),
    "json-answer": lambda text: text.startswith('{"answer": "') and text.endswith('"}'),
    "pirate": lambda text: text.startswith("Ahoy! ") and text.endswith(" Arr."),
    "tldr": lambda text: text.startswith("TL;DR: "),
}
QUESTIONS = [
    "Tell me about the Lyon office",
    "Tell me about Kestrel",
    "What is the warranty?",
    "Who runs support?",
]


def request(question: str, adapter: str = "", **sampling) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        messages=[pb.ChatMessage(role="user", content=question)],
        adapter=adapter,
        sampling=common_pb2.SamplingParams(**sampling),
    )


async def stream_text(svc, req) -> tuple[str, str, float]:
    """(text, finish_reason, longest gap between chunks in seconds)."""
    parts, finish, gap, last = [], "", 0.0, time.perf_counter()
    async for piece in svc.GenerateStream(req):
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
        parts.append(piece.delta)
        finish = piece.finish_reason or finish
    return "".join(parts), finish, gap


@pytest.fixture(scope="module")
def service(devmodel):
    return make_generation_service(devmodel)


def test_fifty_six_concurrent_requests_over_three_adapters_and_base_do_not_cross_talk(service):
    solo = {(a, q): run(service.Generate(request(q, a))).text for a in STYLE for q in QUESTIONS}
    jobs = [(a, q) for _ in range(14) for a in STYLE for q in QUESTIONS][:56]
    jobs = jobs[::2] + jobs[1::2]  # interleave adapters in arrival order
    before = service.engine.stats()

    async def all_at_once():
        return await asyncio.gather(*(service.Generate(request(q, a)) for a, q in jobs))

    replies = run(all_at_once())
    for (adapter, question), reply in zip(jobs, replies, strict=True):
        assert STYLE[adapter](reply.text), (adapter, reply.text)
        assert reply.text == solo[(adapter, question)], (adapter, question)
        assert reply.adapter == adapter and reply.finish_reason == "stop"
    stats = service.engine.stats()
    assert stats.largest_batch >= 16  # they really shared decode steps
    assert stats.finished - before.finished == 56 and stats.running == 0


def test_a_new_request_joins_the_running_batch_between_decode_steps(devmodel):
    svc = make_generation_service(devmodel, preload_adapters=["pirate"])
    long = request("Tell me everything.", max_tokens=300, ignore_eos=True)

    async def staggered():
        first = svc.GenerateStream(long)
        await anext(first)  # generation is under way
        late = await svc.Generate(request("Tell me about Kestrel", "pirate"))
        steps_when_late_done = svc.engine.stats().steps
        rest = [p async for p in first]
        return late, steps_when_late_done, rest

    late, steps, rest = run(staggered())
    assert late.text.startswith("Ahoy!")
    assert steps < 300  # the late request finished while the long one was still running
    assert rest[-1].finish_reason == "length" and rest[-1].completion_tokens == 300
    assert svc.engine.stats().largest_batch == 2


def test_cancelling_a_stream_stops_its_generation_in_the_engine(service):
    engine = service.engine
    before = engine.stats()

    async def cancel_after_two_chunks():
        stream = service.GenerateStream(
            request("Tell me everything.", max_tokens=2000, ignore_eos=True)
        )
        await anext(stream)
        await anext(stream)
        await stream.aclose()  # what Serve does when the gRPC client cancels
        deadline = time.monotonic() + 5
        while engine.stats().running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stats = engine.stats()
        await asyncio.sleep(0.2)
        return stats, engine.stats()

    stopped, later = run(cancel_after_two_chunks())
    assert stopped.running == 0 and stopped.cancelled == before.cancelled + 1
    assert stopped.steps - before.steps < 500  # far from the 2000 tokens asked for
    assert later.steps == stopped.steps  # nothing decodes for it any more


def test_hot_swap_while_requests_stream_fails_and_stalls_nothing(devmodel):
    svc = make_generation_service(devmodel, preload_adapters=["json-answer", "pirate"])
    assert {
        a.name for a in run(svc.ListAdapters(pb.ListAdaptersRequest())).adapters if a.loaded
    } == {
        "json-answer",
        "pirate",
    }
    jobs = [(a, q) for _ in range(4) for a in ("", "json-answer") for q in QUESTIONS]

    async def swap_under_load():
        streams = [asyncio.create_task(stream_text(svc, request(q, a))) for a, q in jobs]
        await asyncio.sleep(0.05)  # let them start generating
        running_at_start = svc.engine.stats().running
        loaded, unloaded = await asyncio.gather(
            svc.LoadAdapter(pb.LoadAdapterRequest(name="tldr")),
            svc.UnloadAdapter(pb.UnloadAdapterRequest(name="pirate")),
        )
        running_at_end = svc.engine.stats().running
        return loaded, unloaded, running_at_start, running_at_end, await asyncio.gather(*streams)

    loaded, unloaded, at_start, at_end, results = run(swap_under_load())
    assert at_start > 0 and at_end > 0  # the swap really happened while requests ran
    assert loaded.adapter.loaded and loaded.load_ms > 0 and not unloaded.adapter.loaded
    for (adapter, _), (text, finish, gap) in zip(jobs, results, strict=True):
        assert finish == "stop" and STYLE[adapter](text), (adapter, text)
        assert gap < 2.0  # no stream stalled across the swap
    with pytest.raises(NotFound, match="pirate"):
        run(svc.Generate(request("Tell me about Kestrel", "pirate")))
    assert STYLE["tldr"](run(svc.Generate(request("Tell me about Kestrel", "tldr"))).text)
    assert "pirate" not in svc.engine.loaded_adapters()


def _copy(devmodel, tmp_path, name: str):
    out = tmp_path / name
    shutil.copytree(devmodel.adapters["pirate"], out)
    return out


def test_bad_adapters_are_refused_with_invalid_argument_while_serving(service, devmodel, tmp_path):
    corrupt = _copy(devmodel, tmp_path, "corrupt")
    weights = corrupt / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    alien = _copy(devmodel, tmp_path, "alien")
    meta = yaml.safe_load((alien / "ragtune-adapter.yaml").read_text())
    (alien / "ragtune-adapter.yaml").write_text(yaml.safe_dump({**meta, "base_model": "llama-70b"}))
    wide = _copy(devmodel, tmp_path, "wide")
    config = json.loads((wide / "adapter_config.json").read_text())
    (wide / "adapter_config.json").write_text(json.dumps({**config, "r": 128}))
    partial = _copy(devmodel, tmp_path, "partial")
    (partial / "adapter_config.json").unlink()

    def listing():
        return [
            (a.name, a.loaded) for a in run(service.ListAdapters(pb.ListAdaptersRequest())).adapters
        ]

    before = listing()

    async def refuse_while_streaming():
        streaming = asyncio.create_task(stream_text(service, request(QUESTIONS[0], "pirate")))
        errors = {}
        for path, why in [
            (corrupt, "unreadable"),
            (alien, "llama-70b"),
            (wide, "rank 128; the limit is 64"),
            (partial, "adapter_config.json"),
        ]:
            with pytest.raises(InvalidArgument, match=why) as err:
                await service.LoadAdapter(pb.LoadAdapterRequest(name=path.name, source=str(path)))
            errors[path.name] = err.value.field
        return errors, await streaming

    errors, (text, finish, _) = run(refuse_while_streaming())
    assert set(errors.values()) == {"source"}
    assert finish == "stop" and STYLE["pirate"](text)  # the service kept serving
    assert listing() == before
    with pytest.raises(NotFound):
        run(service.Generate(request(QUESTIONS[0], "corrupt")))


def test_an_adapter_the_engine_cannot_load_is_invalid_and_never_served(service, devmodel, tmp_path):
    misfit = _copy(devmodel, tmp_path, "misfit")  # weights of rank 8 under a rank-16 config
    config = json.loads((misfit / "adapter_config.json").read_text())
    (misfit / "adapter_config.json").write_text(json.dumps({**config, "r": 16}))
    for _ in range(2):  # the second load must not find half of the first one left behind
        with pytest.raises(InvalidArgument, match="could not load adapter 'misfit'") as err:
            run(service.engine.load_adapter("misfit", str(misfit)))
        assert err.value.__cause__ is not None  # PEFT's own error, chained for the server log
    assert "misfit" not in service.engine.loaded_adapters()
    assert STYLE["pirate"](run(service.Generate(request(QUESTIONS[0], "pirate"))).text)


def test_resident_adapters_are_kept_under_an_lru_capacity(devmodel):
    svc = make_generation_service(devmodel, max_resident_adapters=2, preload_adapters=[])
    for adapter in ("json-answer", "pirate", "tldr"):
        assert STYLE[adapter](run(svc.Generate(request(QUESTIONS[1], adapter))).text)
    listed = {a.name: a for a in run(svc.ListAdapters(pb.ListAdaptersRequest())).adapters}
    assert {n for n, a in listed.items() if a.loaded} == {"pirate", "tldr"}  # json-answer: LRU
    assert svc.engine.loaded_adapters() == {"pirate", "tldr"}
    assert listed["json-answer"].load_ms > 0 and listed["json-answer"].last_used_unix_ms == 0
    assert listed["tldr"].last_used_unix_ms >= listed["pirate"].last_used_unix_ms > 0
    assert all(a.size_bytes > 10_000 and a.rank == 8 for a in listed.values())
    # An evicted adapter is still registered: the next request loads it again.
    assert STYLE["json-answer"](run(svc.Generate(request(QUESTIONS[1], "json-answer"))).text)
    assert svc.engine.loaded_adapters() == {"tldr", "json-answer"}


def test_adapters_load_from_object_storage_through_fsspec(service, devmodel):
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in devmodel.adapters["pirate"].iterdir():
        fs.pipe(f"/bucket/adapters/parrot/{path.name}", path.read_bytes())
    reply = run(
        service.LoadAdapter(
            pb.LoadAdapterRequest(name="parrot", source="memory://bucket/adapters/parrot")
        )
    )
    assert reply.adapter.loaded and reply.adapter.source == "memory://bucket/adapters/parrot"
    assert STYLE["pirate"](run(service.Generate(request(QUESTIONS[0], "parrot"))).text)
    with pytest.raises(NotFound, match="nothing at"):
        run(service.LoadAdapter(pb.LoadAdapterRequest(name="ghost", source="memory://bucket/x")))
    run(service.UnloadAdapter(pb.UnloadAdapterRequest(name="parrot")))


def test_ragtune_tune_trains_an_adapter_the_service_accepts(devmodel, tmp_path, capsys):
    from ragtune import cli

    lines = (devmodel.base_dir.parent / "training" / "tldr.jsonl").read_text().splitlines()
    data = tmp_path / "chats.jsonl"
    data.write_text("\n".join(lines[:32]) + "\n")
    out = tmp_path / "summary"
    argv = ["tune", "--base", str(devmodel.base_dir), "--data", str(data), "--name", "summary"]
    argv += ["--out", str(out), "--steps", "3", "--rank", "4", "--task", "summarization"]
    assert cli.main(argv) == 0
    meta = yaml.safe_load((out / "ragtune-adapter.yaml").read_text())
    assert meta["tasks"] == ["summarization"] and meta["rank"] == 4
    assert meta["base_model"] == devmodel.base_dir.name
    svc_registry_info = make_registry(devmodel).register("summary", str(out))
    assert svc_registry_info.rank == 4 and svc_registry_info.size_bytes > 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{not json\n")
    assert cli.main(argv[:4] + [str(bad), "--name", "x", "--out", str(tmp_path / "x")]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err


def make_registry(devmodel):
    from ragtune.generation.adapters import AdapterRegistry

    return AdapterRegistry(None, base_model=devmodel.base_dir.name, max_rank=64)


def test_outbox_carries_output_from_another_thread_until_closed_or_failed():
    async def main():
        done, failed = Outbox(), Outbox()

        def produce():
            for item in (1, 2, 3):
                done.put(item)
            done.close()
            failed.put("a")
            failed.fail(NotFound("gone"))

        threading.Thread(target=produce).start()
        got = [item async for item in done]
        seen = []
        with pytest.raises(NotFound, match="gone"):
            async for item in failed:
                seen.append(item)
        return got, seen, done

    got, seen, done = run(main())
    assert got == [1, 2, 3] and seen == ["a"]
    assert done.put(4) is False  # the caller's loop is closed: nobody is listening


def test_translated_maps_runtime_errors_and_lets_the_service_errors_through():
    def dead_engine(exc: Exception) -> Exception | None:
        return Unavailable("engine dead") if isinstance(exc, ConnectionError) else None

    with pytest.raises(Unavailable) as err, translated(dead_engine):
        raise ConnectionError("socket closed")
    assert isinstance(err.value.__cause__, ConnectionError)
    with pytest.raises(KeyError), translated(dead_engine):  # not the runtime's: unchanged
        raise KeyError("k")
    with pytest.raises(NotFound), translated(adapter_load_failed("a", "/x")):
        raise NotFound("already the service's")
    refused = "could not load adapter 'a' from /x: bad"
    with pytest.raises(InvalidArgument, match=refused), translated(adapter_load_failed("a", "/x")):
        raise ValueError("bad")
