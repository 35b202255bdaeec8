"""The generation service over the transformers + PEFT engine and the dev model (no Ray)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from ragtune.common.errors import InvalidArgument, NotFound
from ragtune.v1 import common_pb2
from ragtune.v1 import generation_pb2 as pb
from tests.conftest import run


@pytest.fixture(scope="module")
def service(generation_service):
    return generation_service


def generate(svc, text="Tell me about the Lyon office", **fields) -> pb.GenerateResponse:
    return run(
        svc.Generate(
            pb.GenerateRequest(messages=[pb.ChatMessage(role="user", content=text)], **fields)
        )
    )


def test_adapters_change_the_output_as_trained(service):
    base = generate(service)
    assert base.text and not base.text.startswith(("{", "Ahoy")) and base.adapter == ""
    assert generate(service, adapter="json-answer").text.startswith('{"answer": "')
    assert generate(service, adapter="pirate").text.startswith("Ahoy!")
    assert base.model == "ragtune-dev-llama" and base.finish_reason == "stop"
    assert base.prompt_tokens > 5 and 0 < base.completion_tokens < 128


def test_stream_deltas_add_up_to_the_unary_answer(service):
    request = pb.GenerateRequest(
        messages=[pb.ChatMessage(role="user", content="Tell me about Kestrel")],
        adapter="json-answer",
    )

    async def collect():
        return [m async for m in service.GenerateStream(request)]

    parts = run(collect())
    assert len(parts) > 2 and parts[-1].finish_reason == "stop"
    assert "".join(p.delta for p in parts) == run(service.Generate(request)).text


def test_max_tokens_and_stop_strings_end_generation(service):
    short = generate(service, sampling=common_pb2.SamplingParams(max_tokens=3))
    assert short.finish_reason == "length" and short.completion_tokens == 3
    stopped = generate(service, adapter="pirate", sampling=common_pb2.SamplingParams(stop=["!"]))
    assert stopped.text == "Ahoy" and stopped.finish_reason == "stop"


def test_context_passages_reach_the_prompt(service):
    plain = generate(service)
    grounded = generate(
        service,
        context=[
            pb.ContextPassage(marker=1, source="lyon.md", text="The Lyon office opened in March.")
        ],
    )
    assert grounded.prompt_tokens > plain.prompt_tokens + 10


def test_adapters_unload_and_load_at_run_time(service):
    assert not run(service.UnloadAdapter(pb.UnloadAdapterRequest(name="pirate"))).adapter.loaded
    with pytest.raises(NotFound):
        generate(service, adapter="pirate")
    assert generate(service, adapter="json-answer").text.startswith('{"answer"')  # undisturbed
    loaded = run(service.LoadAdapter(pb.LoadAdapterRequest(name="pirate")))
    assert loaded.adapter.loaded and loaded.load_ms > 0 and loaded.adapter.tone == "pirate"
    assert generate(service, adapter="pirate").text.startswith("Ahoy!")


def test_an_adapter_for_another_base_model_is_refused(service, devmodel, tmp_path):
    bad = tmp_path / "alien"
    shutil.copytree(devmodel.adapters["pirate"], bad)
    meta_file = bad / "ragtune-adapter.yaml"
    meta = yaml.safe_load(meta_file.read_text())
    meta_file.write_text(yaml.safe_dump({**meta, "name": "alien", "base_model": "llama-70b"}))
    with pytest.raises(InvalidArgument, match="llama-70b"):
        run(service.LoadAdapter(pb.LoadAdapterRequest(name="alien", source=str(bad))))
    (bad / "adapter_config.json").unlink()
    with pytest.raises(InvalidArgument, match="adapter_config.json"):
        run(service.LoadAdapter(pb.LoadAdapterRequest(name="alien", source=str(bad))))
    listing = run(service.ListAdapters(pb.ListAdaptersRequest()))
    assert [a.name for a in listing.adapters] == ["json-answer", "pirate", "tldr"]
    # The base model every adapter declares (what the OpenAI-compatible API lists first).
    assert {a.base_model for a in listing.adapters} == {listing.base_model} != {""}


def test_bad_requests(service):
    with pytest.raises(InvalidArgument) as err:
        run(service.Generate(pb.GenerateRequest()))
    assert err.value.field == "messages"
    with pytest.raises(InvalidArgument) as err:
        run(
            service.Generate(
                pb.GenerateRequest(messages=[pb.ChatMessage(role="robot", content="x")])
            )
        )
    assert err.value.field == "messages[0].role"
    with pytest.raises(InvalidArgument) as err:
        generate(service, sampling=common_pb2.SamplingParams(max_tokens=100_000))
    assert err.value.field == "sampling.max_tokens"
    with pytest.raises(NotFound):
        generate(service, adapter="nope")
