"""The OpenAI-compatible API end to end, driven by the official `openai` client: Serve's HTTP
port (HAProxy) -> the FastAPI ingress -> the gateway through a handle, with the caller's key
-> embedding, retrieval, rerank, generation on vLLM."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "When did the Lyon office open?"}]
DEMO = {"ragtune": {"collection": "demo"}}


@pytest.fixture(scope="module")
def api(platform):
    """An OpenAI client of acme's, once the HTTP ingress routes to the application (HAProxy
    learns the replicas a moment after Serve reports them running: 404 until then)."""
    deadline = time.monotonic() + 120
    while True:
        reply = httpx.get(
            f"{platform.openai_url}/models",
            headers={"Authorization": f"Bearer {platform.acme_key}"},
            timeout=30,
        )
        if reply.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert reply.status_code == 200, reply.text
    return client(platform, platform.acme_key)


def client(platform, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=platform.openai_url, api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def base_model(api) -> str:
    return api.models.list().data[0].id


def test_models_lists_the_base_model_and_the_adapters(platform, api):
    with platform.client() as grpc_client:
        listing = grpc_client.list_adapters()
    ids = [m.id for m in api.models.list().data]
    assert ids[0] == listing.base_model == "ragtune-dev-llama"
    assert set(ids[1:]) == {a.name for a in listing.adapters} >= {"json-answer", "pirate", "tldr"}


def test_a_completion_answers_with_usage_and_the_route(platform, api, demo, base_model):
    completion = api.chat.completions.create(
        model=base_model, messages=QUESTION, max_tokens=24, extra_body=DEMO
    )
    assert completion.object == "chat.completion" and completion.model == base_model
    assert completion.choices[0].message.content.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    ext = completion.model_extra["ragtune"]
    assert ext["route"]["path"] == "RAG" and ext["route"]["reasons"]
    assert ext["citations"] and ext["citations"][0]["doc_id"]
    assert ext["cost"]["total_micro_usd"] > 0 and "total" in ext["timings_ms"]
    # The id is the gateway's request id: the gRPC API rates the same request.
    assert completion.id == ext["request_id"]
    with platform.client() as grpc_client:
        assert grpc_client.feedback(completion.id, 5).path  # the path recorded with it


def test_an_adapter_is_a_model(api, demo):
    completion = api.chat.completions.create(
        model="json-answer",
        messages=[{"role": "user", "content": "How long is the Atlas A2 warranty?"}],
        max_completion_tokens=32,
        extra_body={"ragtune": {"path": "tuned"}},
    )
    ext = completion.model_extra["ragtune"]
    assert ext["route"]["path"] == "TUNED" and ext["route"]["adapter"] == "json-answer"
    assert completion.choices[0].message.content.startswith('{"answer": "')


def test_a_stream_sends_deltas_then_usage(api, demo, base_model):
    stream = api.chat.completions.create(
        model=base_model,
        messages=QUESTION,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=DEMO,
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) >= 3 and "".join(deltas).strip()
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and all(c.model == base_model for c in chunks)
    finished = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finished in (["stop"], ["length"])
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens > 0
    assert last.usage.prompt_tokens > 0
    assert last.model_extra["ragtune"]["route"]["path"] == "RAG"


def test_errors_are_openai_errors(platform, api, base_model):
    with pytest.raises(openai.AuthenticationError) as err:
        client(platform, "rt_not-a-key").chat.completions.create(
            model=base_model, messages=QUESTION
        )
    assert err.value.code == "unauthenticated"
    with pytest.raises(openai.AuthenticationError):
        client(platform, "rt_not-a-key").models.list()
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(
            model=base_model,
            messages=[{"role": "system", "content": "Be brief."}, *QUESTION],
        )
    assert err.value.param == "messages" and "one message" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        api.chat.completions.create(model=base_model, messages=QUESTION, temperature=9)
    assert err.value.param == "temperature"
    with pytest.raises(openai.NotFoundError) as err:
        api.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert err.value.code == "model_not_found" and err.value.param == "model"
    # A collection the tenant does not have: the gateway's NOT_FOUND, as the gRPC API says it.
    with pytest.raises(openai.NotFoundError) as err:
        api.chat.completions.create(
            model=base_model, messages=QUESTION, extra_body={"ragtune": {"collection": "nope"}}
        )
    assert err.value.code == "not_found" and "nope" in err.value.message
