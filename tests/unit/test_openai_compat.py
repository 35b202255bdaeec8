"""The OpenAI-compatible API without Ray: the pure mappings (request -> AnswerRequest, reply ->
chat.completion, error -> HTTP), and the FastAPI app driven by the official `openai` client
over a fake gateway (the real key store authenticates)."""

from __future__ import annotations

import json

import grpc
import httpx
import openai
import pytest
from pydantic import ValidationError

from ragtune.common import serving
from ragtune.common.auth import KeyStore, Principal, hash_key
from ragtune.common.clients import HandleTransport, LocalTransport
from ragtune.common.context import CallContext
from ragtune.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from ragtune.common.services import GATEWAY
from ragtune.openai_compat import mapping
from ragtune.openai_compat.config import OpenAIConfig
from ragtune.openai_compat.protocol import ChatCompletionRequest
from ragtune.openai_compat.routes import make_app, parse_body
from ragtune.openai_compat.service import OpenAIService
from ragtune.v1 import common_pb2, gateway_pb2, generation_pb2
from tests.conftest import run

BASE = "ragtune-dev-llama"
KEY = "rt_good"


def body(**fields) -> ChatCompletionRequest:
    fields.setdefault("model", BASE)
    fields.setdefault("messages", [{"role": "user", "content": "When did Lyon open?"}])
    return ChatCompletionRequest.model_validate(fields)


def refusal(**fields) -> InvalidArgument:
    """The 400 a body with ``fields`` gets (None: the body is accepted)."""
    fields.setdefault("model", BASE)
    fields.setdefault("messages", [{"role": "user", "content": "q"}])
    with pytest.raises(InvalidArgument) as err:
        parse_body(json.dumps(fields).encode())
    return err.value


def reply(answer: str = "Lyon opened in 2019.") -> gateway_pb2.AnswerResponse:
    done = gateway_pb2.AnswerResponse(
        answer=answer,
        route=common_pb2.RouteDecision(
            path=common_pb2.PATH_RAG,
            collection="demo",
            reasons=["corpus_can_answer"],
            explanation="RAG: the probe found close matches.",
            confidence=0.8,
        ),
        usage=common_pb2.Usage(
            embedding_tokens=7, rerank_tokens=0, prompt_tokens=120, completion_tokens=9
        ),
        finish_reason="stop",
        request_id="a1b2",
        cost=common_pb2.Cost(
            total_micro_usd=31,
            stages=[
                common_pb2.StageCost(stage="generate", worker="cpu", busy_ms=80.5, micro_usd=30)
            ],
        ),
    )
    done.citations.add(marker=1, doc_id="lyon.md", chunk_id="lyon.md#0", score=0.71, snippet="Ly")
    done.timings.add(stage="generate", ms=81.0)
    done.timings.add(stage="total", ms=95.0)
    return done


# -- request mapping ----------------------------------------------------------------------------


def test_a_chat_request_becomes_an_answer_request():
    request = mapping.answer_request(
        body(
            max_tokens=50,
            max_completion_tokens=20,  # the newer name wins
            temperature=0.7,
            top_p=0.9,
            stop="\n\n",
            seed=42,
            ignore_eos=True,
            ragtune={"path": "HYBRID", "top_k": 3, "require_citations": True, "tone": "pirate"},
        ),
        adapter="pirate",
        default_collection="demo",
    )
    assert request.question == "When did Lyon open?"
    assert request.adapter == "pirate" and request.path == common_pb2.PATH_HYBRID
    assert request.collection == "demo" and request.top_k == 3 and request.require_citations
    assert request.tone == "pirate"
    s = request.sampling
    assert (s.max_tokens, round(s.temperature, 3), round(s.top_p, 3)) == (20, 0.7, 0.9)
    assert list(s.stop) == ["\n\n"] and s.seed == 42 and s.ignore_eos


def test_the_base_model_leaves_the_route_to_the_gateway_and_defaults_stay_unset():
    request = mapping.answer_request(body(), adapter="")
    assert request.path == common_pb2.PATH_AUTO and not request.adapter
    assert request.sampling == common_pb2.SamplingParams()  # the gateway's defaults apply
    assert request.collection == ""  # the gateway's default collection
    assert mapping.answer_request(body(ragtune={"collection": "x"}), adapter="").collection == "x"


def test_text_parts_are_joined():
    parts = [{"type": "text", "text": "When did "}, {"type": "text", "text": "Lyon open?"}]
    assert body(messages=[{"role": "user", "content": parts}]).question == "When did Lyon open?"


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "  "}]}, "messages"),
        ({"messages": [{"role": "robot", "content": "q"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages[0].content"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"top_k": 5}, "top_k"),
        ({"ragtune": {"colection": "demo"}}, "ragtune.colection"),
        ({"ragtune": {"path": "fast"}}, "ragtune.path"),
        ({"stop": ["s"] * 17}, "stop"),
    ],
)  # fmt: skip
def test_a_bad_body_is_refused_naming_the_field(fields, param):
    assert refusal(**fields).field == param


def test_a_missing_model_and_a_broken_body_are_named():
    with pytest.raises(InvalidArgument) as err:
        parse_body(b'{"messages": [{"role": "user", "content": "q"}]}')
    assert err.value.field == "model"
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        parse_body(b'{"model": ')
    with pytest.raises(InvalidArgument, match="JSON object"):
        parse_body(b"[1, 2]")


def test_neutral_values_of_unsupported_parameters_and_unknown_fields_pass():
    body(n=1, logprobs=False, tools=[], tool_choice="none", presence_penalty=0.0, top_k=-1,
         response_format={"type": "text"}, user="u-1", metadata={"a": "b"}, store=False)  # fmt: skip
    with pytest.raises(ValidationError):
        body(n=3)


# -- response mapping ---------------------------------------------------------------------------


def test_a_reply_becomes_a_chat_completion_with_the_ragtune_extension():
    completion = mapping.completion(reply(), model=BASE, created=1700000000)
    assert completion["id"] == "a1b2" and completion["object"] == "chat.completion"
    assert completion["model"] == BASE and completion["created"] == 1700000000
    (choice,) = completion["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Lyon opened in 2019."}
    assert choice["finish_reason"] == "stop"
    assert completion["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 9,
        "total_tokens": 129,
    }
    ext = completion["ragtune"]
    assert ext["request_id"] == "a1b2"
    assert ext["route"]["path"] == "RAG" and ext["route"]["reasons"] == ["corpus_can_answer"]
    assert ext["citations"][0]["doc_id"] == "lyon.md" and ext["citations"][0]["marker"] == 1
    assert ext["cost"]["total_micro_usd"] == 31 and ext["cost"]["stages"][0]["stage"] == "generate"
    assert ext["timings_ms"] == {"generate": 81.0, "total": 95.0}
    assert ext["usage"] == {"embedding_tokens": 7, "rerank_tokens": 0}
    json.dumps(completion)  # plain JSON: no protobuf values left


def test_finish_reasons_are_openai_s():
    done = reply()
    done.finish_reason = "length"
    assert mapping.finish_reason(done) == "length"
    done.finish_reason = "cancelled"
    assert mapping.finish_reason(done) == "stop"


def test_chunks_carry_usage_only_when_asked():
    plain = mapping.chunk("c1", model=BASE, created=1, delta={"content": "x"})
    assert "usage" not in plain and plain["choices"][0]["delta"] == {"content": "x"}
    with_usage = mapping.chunk("c1", model=BASE, created=1, delta={"content": "x"}, with_usage=True)
    assert with_usage["usage"] is None
    last = mapping.chunk("c1", model=BASE, created=1, usage={"total_tokens": 3}, with_usage=True)
    assert last["choices"] == [] and last["usage"] == {"total_tokens": 3}


def test_models_lists_the_base_model_first_then_the_adapters():
    listing = generation_pb2.ListAdaptersResponse(base_model=BASE)
    listing.adapters.add(name="json-answer")
    listing.adapters.add(name="pirate")
    models = mapping.model_list(listing, created=5, owned_by="ragtune")
    assert models["object"] == "list"
    assert [(m["id"], m["parent"]) for m in models["data"]] == [
        (BASE, None),
        ("json-answer", BASE),
        ("pirate", BASE),
    ]
    assert models["data"][0]["root"] == BASE  # what `vllm bench serve` reads


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc,status,kind,code",
    [
        (InvalidArgument("must not be empty", field="question"), 400, "invalid_request_error",
         "invalid_argument"),
        (FailedPrecondition("nothing can answer"), 400, "invalid_request_error",
         "failed_precondition"),
        (Unauthenticated("unknown API key"), 401, "authentication_error", "unauthenticated"),
        (NotFound("collection 'x' not found"), 404, "invalid_request_error", "not_found"),
        (mapping.ModelNotFound("gpt-9"), 404, "invalid_request_error", "model_not_found"),
        (ResourceExhausted("queue full"), 429, "rate_limit_error", "resource_exhausted"),
        (Unavailable("not ready"), 503, "server_error", "unavailable"),
        (TimeoutError(), 504, "server_error", "deadline_exceeded"),
        (KeyError("secret internals"), 500, "server_error", "internal"),
    ],
)  # fmt: skip
def test_errors_map_as_on_the_grpc_api_in_openai_s_shape(exc, status, kind, code):
    got, payload = mapping.error(exc)
    error = payload["error"]
    assert (got, error["type"], error["code"]) == (status, kind, code)
    assert set(error) == {"message", "type", "code", "param"}
    assert "secret internals" not in error["message"] and "Traceback" not in error["message"]


def test_an_error_names_the_openai_parameter():
    _, payload = mapping.error(InvalidArgument("must not be empty", field="question"))
    assert payload["error"]["param"] == "messages"
    assert payload["error"]["message"] == "messages: must not be empty"
    _, payload = mapping.error(InvalidArgument("must be >= 1", field="sampling.max_tokens"))
    assert payload["error"]["param"] == "max_tokens"
    _, payload = mapping.error(mapping.ModelNotFound("gpt-9"))
    assert payload["error"]["param"] == "model" and "gpt-9" in payload["error"]["message"]


def test_every_status_code_has_an_http_status():
    for code in grpc.StatusCode:
        if code is not grpc.StatusCode.OK:
            assert 400 <= mapping.HTTP_STATUS.get(code, 500) < 600


# -- the caller's metadata through a handle --------------------------------------------------------


class FakeHandle:
    """A DeploymentHandle that records how each RPC was called."""

    def __init__(self):
        self.calls = []

    def options(self, **options):
        return self

    def __getattr__(self, rpc):
        handle = self

        class Method:
            async def remote(self, request, **kwargs):
                handle.calls.append((rpc, kwargs))
                return gateway_pb2.AnswerResponse(answer="ok")

        return Method()


def test_a_handle_transport_for_a_caller_sends_its_metadata_and_shares_the_handle():
    shared = HandleTransport(GATEWAY.name, GATEWAY.deployment)
    shared._handle = FakeHandle()
    caller = shared.for_caller({"authorization": "Bearer rt_x"})
    assert caller.handle is shared.handle  # no handle (and router) per request
    run(GATEWAY.connect(caller).answer(gateway_pb2.AnswerRequest(question="q")))
    run(GATEWAY.connect(shared).answer(gateway_pb2.AnswerRequest(question="q")))
    (rpc, with_caller), (_, without) = shared.handle.calls
    assert rpc == "Answer" and with_caller["_metadata"] == {"authorization": "Bearer rt_x"}
    assert "_trace" in with_caller and "_metadata" not in without  # internal calls unchanged


def test_a_handle_call_s_metadata_is_the_service_s_call_context():
    class GrpcContext:
        def invocation_metadata(self):
            return [("authorization", "Bearer from-grpc")]

        def request_id(self):
            return "r1"

    handed = serving._call_context(None, {"Authorization": "Bearer rt_x"})
    assert handed.get("authorization") == "Bearer rt_x"  # keys lower-cased, as gRPC's
    # A gRPC call's own metadata wins: `_metadata` is for handle calls only.
    over_grpc = serving._call_context(GrpcContext(), {"authorization": "x"})
    assert over_grpc.get("authorization") == "Bearer from-grpc"
    assert serving._call_context(None, None) == CallContext()


# -- the app, through the openai client -----------------------------------------------------------


class FakeGateway:
    """The gateway's RPCs the API calls, answering from ``reply()`` in three deltas; the real
    key store authenticates the metadata it is given."""

    KEYS = KeyStore({hash_key(KEY): Principal("acme")})

    def __init__(self, metadata, calls):
        self.context = CallContext.from_metadata(metadata)
        self.calls = calls

    def __getattr__(self, rpc):  # the RPCs the API never calls (the client wants them all)
        if rpc.startswith("_"):
            raise AttributeError(rpc)
        return None

    async def ListAdapters(self, request):
        self.KEYS.principal_for(self.context.metadata)
        listing = generation_pb2.ListAdaptersResponse(base_model=BASE)
        listing.adapters.add(name="pirate")
        return listing

    async def AnswerStream(self, request):
        self.KEYS.principal_for(self.context.metadata)
        self.calls.append(request)
        done = reply()
        yield gateway_pb2.AnswerEvent(route=done.route)
        for piece in ("Lyon ", "opened ", "in 2019."):
            yield gateway_pb2.AnswerEvent(delta=piece)
            if request.question == "fail midway":
                raise Unavailable("generation went away")
        done.answer = ""
        yield gateway_pb2.AnswerEvent(done=done)

    async def Answer(self, request):
        reply_ = None
        async for event in self.AnswerStream(request):
            reply_ = event.done if event.HasField("done") else reply_
        reply_.answer = "Lyon opened in 2019."
        return reply_


@pytest.fixture
def api():
    """(openai client factory, gateway requests seen) over the app on an in-process transport."""
    calls: list[gateway_pb2.AnswerRequest] = []
    service = OpenAIService(
        OpenAIConfig(),
        lambda metadata: GATEWAY.connect(LocalTransport(FakeGateway(metadata, calls))),
    )
    app = make_app(service)

    def client(key: str = KEY) -> openai.AsyncOpenAI:
        """The official openai client over the app, in process."""
        transport = httpx.ASGITransport(app=app)
        return openai.AsyncOpenAI(
            base_url="http://ragtune.test",
            api_key=key,
            max_retries=0,
            http_client=httpx.AsyncClient(transport=transport, base_url="http://ragtune.test"),
        )

    return client, calls


QUESTION = [{"role": "user", "content": "When did Lyon open?"}]


def test_a_completion_through_the_openai_client(api):
    client, calls = api
    completion = run(client().chat.completions.create(model=BASE, messages=QUESTION, max_tokens=8))
    assert completion.choices[0].message.content == "Lyon opened in 2019."
    assert completion.usage.total_tokens == 129 and completion.id == "a1b2"
    assert completion.model_extra["ragtune"]["route"]["path"] == "RAG"
    assert calls[-1].sampling.max_tokens == 8 and not calls[-1].adapter


def test_a_stream_through_the_openai_client(api):
    client, calls = api

    async def chunks():
        stream = await client().chat.completions.create(
            model="pirate", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
        return [c async for c in stream]

    got = run(chunks())
    assert calls[-1].adapter == "pirate"
    texts = [c.choices[0].delta.content for c in got if c.choices]
    assert "".join(t or "" for t in texts) == "Lyon opened in 2019."
    assert got[0].choices[0].delta.role == "assistant" and got[0].choices[0].delta.content
    assert len({c.id for c in got}) == 1
    finish = [c.choices[0].finish_reason for c in got if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = got[-1]
    assert last.choices == [] and last.usage.completion_tokens == 9
    assert last.model_extra["ragtune"]["request_id"] == "a1b2"


def test_models_through_the_openai_client(api):
    client, _ = api

    async def listing():
        return await client().models.list()

    models = run(listing())
    assert [m.id for m in models.data] == [BASE, "pirate"]


def test_errors_through_the_openai_client(api):
    client, _ = api
    create = client().chat.completions.create
    with pytest.raises(openai.NotFoundError) as err:
        run(create(model="gpt-9", messages=QUESTION))
    assert err.value.code == "model_not_found" and err.value.param == "model"
    with pytest.raises(openai.BadRequestError) as err:
        run(create(model=BASE, messages=QUESTION, temperature=7))
    assert err.value.param == "temperature" and "temperature" in err.value.message
    with pytest.raises(openai.AuthenticationError):
        run(client("rt_wrong").chat.completions.create(model=BASE, messages=QUESTION))

    async def listing():
        return await client("rt_wrong").models.list()

    with pytest.raises(openai.AuthenticationError):
        run(listing())
    # Refused before any text: an HTTP status, not a 200 stream that carries an error.
    with pytest.raises(openai.AuthenticationError):
        run(client("rt_wrong").chat.completions.create(model=BASE, messages=QUESTION, stream=True))


def test_the_stream_is_server_sent_events_and_a_late_error_is_an_event(api):
    client, _ = api
    http = client()._client  # the httpx client under the openai one

    async def post(question):
        response = await http.post(
            "/chat/completions",
            json={
                "model": BASE,
                "messages": [{"role": "user", "content": question}],
                "stream": True,
            },
            headers={"Authorization": f"Bearer {KEY}"},
        )
        return response.status_code, response.headers["content-type"], response.text

    status, kind, text = run(post("When did Lyon open?"))
    assert status == 200 and kind.startswith("text/event-stream")
    events = text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert "usage" not in json.loads(events[0][len("data: ") :])  # not asked for
    assert json.loads(events[-3][len("data: ") :])["ragtune"]["request_id"] == "a1b2"
    # Failing after the first text: the status is sent already, so an error event ends it.
    status, _, text = run(post("fail midway"))
    error = json.loads(text.split("\n\n")[-3][len("data: ") :])["error"]
    assert status == 200 and error["code"] == "unavailable" and text.endswith("data: [DONE]\n\n")


def test_an_unknown_path_answers_in_openai_s_shape(api):
    client, _ = api
    with pytest.raises(openai.NotFoundError) as err:
        run(client().completions.create(model=BASE, prompt="x"))
    assert "POST /v1/chat/completions" in err.value.message
