"""One trace per request across every service, received by a real OTLP/gRPC receiver."""

from __future__ import annotations

import secrets

import pytest

from ragtune.v1 import common_pb2, gateway_pb2, generation_pb2

pytestmark = pytest.mark.integration

GATEWAY = "ragtune.v1.Gateway/Answer"
EMBED, SEARCH = "ragtune.v1.Embedding/Embed", "ragtune.v1.Retrieval/Search"
RERANK, GENERATE = "ragtune.v1.Rerank/Rerank", "ragtune.v1.Generation/GenerateStream"


def traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


def call(platform, method: str, request, *, key: str | None = None):
    header, trace_id, parent_id = traceparent()
    with platform.client(key) as client:
        stub = getattr(client.stub, method)
        reply = stub(request, metadata=[*client.metadata, ("traceparent", header)], timeout=120)
    return reply, trace_id, parent_id


@pytest.mark.parametrize(
    ("question", "path", "stages"),
    [
        ("How long is the Atlas A2 warranty?", "RAG", {EMBED, SEARCH, RERANK, GENERATE}),
        (
            "Answer in JSON: how long is the Atlas A2 warranty?",
            "HYBRID",
            {EMBED, SEARCH, RERANK, GENERATE},
        ),  # fmt: skip
        (
            "Talk like a pirate: what is a good name for a parrot?",
            "TUNED",
            {EMBED, SEARCH, GENERATE},
        ),  # fmt: skip  (the probe searched; nothing was reranked)
    ],
)
def test_one_trace_per_answer_across_every_service(platform, demo, question, path, stages):
    reply, trace_id, caller = call(
        platform, "Answer", gateway_pb2.AnswerRequest(question=question, collection="demo")
    )
    assert common_pb2.Path.Name(reply.route.path) == f"PATH_{path}"
    spans = platform.spans.wait_for(trace_id, {GATEWAY, "route decision", *stages})
    by_name = {s.name: s for s in spans}
    assert {GATEWAY, "route decision", *stages} <= set(by_name), sorted(by_name)
    assert RERANK not in by_name or path != "TUNED"
    gateway = by_name[GATEWAY]
    # The caller's trace continues: the gateway's span is the child of the caller's span, and
    # every stage, in whichever service process it ran, is a child of the gateway's span.
    assert gateway.parent_id == caller and gateway.service == "ragtune-gateway"
    for name in ("route decision", *stages):
        assert by_name[name].parent_id == gateway.span_id, name
    assert {s.service for s in spans} >= {"ragtune-gateway", "ragtune-embedding",
                                          "ragtune-retrieval", "ragtune-generation"}  # fmt: skip

    attrs = gateway.attributes
    assert attrs["ragtune.route.path"] == path
    assert attrs["ragtune.route.reason"] == ",".join(reply.route.reasons)
    assert attrs["ragtune.cost.usd"] == pytest.approx(reply.cost.total_micro_usd / 1e6)
    assert attrs.get("ragtune.adapter", "") == reply.route.adapter
    assert "ragtune.tenant" not in attrs  # opt-in only
    generate = by_name[GENERATE].attributes
    assert generate["gen_ai.operation.name"] == "chat"
    assert generate["gen_ai.request.model"] == "ragtune-dev-llama"
    assert generate["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert generate["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert 0 < generate["gen_ai.server.time_to_first_token"] < 60
    assert "gen_ai.input.messages" not in generate  # prompt text only when enabled
    embed = by_name[EMBED].attributes
    assert embed["gen_ai.operation.name"] == "embeddings"
    assert embed["gen_ai.usage.input_tokens"] == reply.usage.embedding_tokens


def test_adapter_load_has_its_span_in_the_callers_trace(platform):
    with platform.client() as client:
        client.unload_adapter("tldr")
    reply, trace_id, caller = call(
        platform, "LoadAdapter", generation_pb2.LoadAdapterRequest(name="tldr")
    )
    assert reply.adapter.loaded
    names = {"ragtune.v1.Gateway/LoadAdapter", "ragtune.v1.Generation/LoadAdapter", "adapter load"}
    spans = {s.name: s for s in platform.spans.wait_for(trace_id, names)}
    assert names <= set(spans)
    assert spans["ragtune.v1.Gateway/LoadAdapter"].parent_id == caller
    load_rpc = spans["ragtune.v1.Generation/LoadAdapter"]
    assert load_rpc.parent_id == spans["ragtune.v1.Gateway/LoadAdapter"].span_id
    assert spans["adapter load"].parent_id == load_rpc.span_id
    assert spans["adapter load"].attributes["ragtune.adapter"] == "tldr"
