"""Pure translations between the OpenAI chat API and the gateway's messages, and from errors
to OpenAI-shaped HTTP errors. No I/O here: the service (``service.py``) calls the gateway."""

from __future__ import annotations

from typing import Any

import grpc
from pydantic import ValidationError

from ragtune.common.errors import InvalidArgument, NotFound, RagtuneError, to_status, unwrap
from ragtune.openai_compat.protocol import ChatCompletionRequest
from ragtune.v1 import common_pb2, gateway_pb2, generation_pb2

PATHS = {
    "auto": common_pb2.PATH_AUTO,
    "rag": common_pb2.PATH_RAG,
    "tuned": common_pb2.PATH_TUNED,
    "hybrid": common_pb2.PATH_HYBRID,
}

# gRPC status -> HTTP status: the canonical mapping of google/rpc/code.proto, which gRPC
# gateways use too.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# HTTP status -> OpenAI's error `type` (what OpenAI's own API sends for the same status).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
}

# The gateway's request fields, named as the OpenAI request names them (an error's `param`).
PARAMS = {
    "question": "messages",
    "adapter": "model",
    "sampling.max_tokens": "max_tokens",
    "sampling.temperature": "temperature",
    "sampling.top_p": "top_p",
    "sampling.stop": "stop",
    "sampling.seed": "seed",
    **{
        name: f"ragtune.{name}"
        for name in (
            "path",
            "collection",
            "top_k",
            "filter",
            "output_format",
            "task",
            "tone",
            "latency_budget_ms",
            "max_cost_micro_usd",
        )
    },
}


class ModelNotFound(NotFound):
    """The request's ``model`` is neither the base model nor a registered adapter."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"the model {model!r} does not exist: GET /v1/models lists the base model and "
            "the adapters",
            field="model",
        )


# -- requests ---------------------------------------------------------------------------------


def answer_request(
    body: ChatCompletionRequest, *, adapter: str, default_collection: str = ""
) -> gateway_pb2.AnswerRequest:
    """The gateway request for ``body``. ``adapter``: the adapter its ``model`` names, empty
    for the base model (the gateway then routes: RAG, or an adapter its cues ask for)."""
    options = body.ragtune
    max_tokens = body.max_completion_tokens or body.max_tokens or 0
    sampling = common_pb2.SamplingParams(
        max_tokens=max_tokens,  # 0: the gateway's default
        temperature=body.temperature or 0.0,  # 0: greedy, ragtune's default
        top_p=body.top_p or 0.0,  # 0: 1.0
        seed=body.seed or 0,  # 0: unseeded
        stop=body.stop,
        ignore_eos=body.ignore_eos,
    )
    return gateway_pb2.AnswerRequest(
        question=body.question,
        path=PATHS[options.path],
        adapter=adapter,
        collection=options.collection or default_collection,
        top_k=options.top_k,
        sampling=sampling,
        filter=options.filter,
        require_citations=options.require_citations,
        freshness_sensitive=options.freshness_sensitive,
        output_format=options.output_format,
        task=options.task,
        tone=options.tone,
        latency_budget_ms=options.latency_budget_ms,
        max_cost_micro_usd=options.max_cost_micro_usd,
    )


def invalid_body(err: ValidationError) -> InvalidArgument:
    """A pydantic error on the request body as the 400 the caller sees: the first problem,
    with the field's path (``messages[0].role``) as its ``param``."""
    first = err.errors()[0]
    field = ""
    for part in first["loc"]:
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field += f".{part}" if field else str(part)
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "json_invalid":
        return InvalidArgument(f"the body is not valid JSON ({first['ctx']['error']})")
    if not field:
        return InvalidArgument(f"the body must be a JSON object: {message}")
    return InvalidArgument(message, field=field)


# -- responses --------------------------------------------------------------------------------


def usage(reply: gateway_pb2.AnswerResponse) -> dict[str, int]:
    prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def route(decision: common_pb2.RouteDecision) -> dict[str, Any]:
    return {
        "path": common_pb2.Path.Name(decision.path).removeprefix("PATH_"),
        "adapter": decision.adapter,
        "collection": decision.collection,
        "reasons": list(decision.reasons),
        "explanation": decision.explanation,
        "confidence": round(decision.confidence, 4),
    }


def extension(reply: gateway_pb2.AnswerResponse) -> dict[str, Any]:
    """The ``ragtune`` field of a reply: what the gateway says beyond OpenAI's schema."""
    return {
        "request_id": reply.request_id,
        "route": route(reply.route),
        "citations": [
            {
                "marker": c.marker,
                "doc_id": c.doc_id,
                "chunk_id": c.chunk_id,
                "score": round(c.score, 4),
                "snippet": c.snippet,
                "metadata": dict(c.metadata),
            }
            for c in reply.citations
        ],
        "cost": {
            "total_micro_usd": reply.cost.total_micro_usd,
            "list_price_micro_usd": reply.cost.list_price_micro_usd,
            "stages": [
                {
                    "stage": s.stage,
                    "worker": s.worker,
                    "busy_ms": round(s.busy_ms, 3),
                    "tokens": s.tokens,
                    "micro_usd": s.micro_usd,
                }
                for s in reply.cost.stages
            ],
        },
        "timings_ms": {t.stage: round(t.ms, 3) for t in reply.timings},
        "usage": {
            "embedding_tokens": reply.usage.embedding_tokens,
            "rerank_tokens": reply.usage.rerank_tokens,
        },
        "finish_reason": reply.finish_reason,
    }


def finish_reason(reply: gateway_pb2.AnswerResponse) -> str:
    # The gateway says "stop", "length" or "cancelled"; the last never reaches a caller that is
    # still listening.
    return reply.finish_reason if reply.finish_reason in ("stop", "length") else "stop"


def completion(reply: gateway_pb2.AnswerResponse, *, model: str, created: int) -> dict[str, Any]:
    """A ``chat.completion`` object; its id is the gateway's request_id (for Feedback)."""
    return {
        "id": reply.request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.answer},
                "logprobs": None,
                "finish_reason": finish_reason(reply),
            }
        ],
        "usage": usage(reply),
        "ragtune": extension(reply),
    }


def chunk(
    chunk_id: str,
    *,
    model: str,
    created: int,
    delta: dict[str, str] | None = None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    with_usage: bool = False,
    ragtune: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``: one choice with ``delta`` (and ``finish``), or, for the
    usage chunk (``delta`` None), no choice. ``with_usage``: the caller asked for usage, so
    every chunk has the field (null but on the usage chunk), as OpenAI's do."""
    body: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage:
        body["usage"] = usage
    if ragtune is not None:
        body["ragtune"] = ragtune
    return body


def model_list(
    listing: generation_pb2.ListAdaptersResponse, *, created: int, owned_by: str
) -> dict[str, Any]:
    """``GET /v1/models``: the base model first (tools that take the first model get the
    routed default), then every registered adapter. ``root``/``parent`` as vLLM's server
    gives them (``vllm bench serve`` reads ``root``)."""

    def entry(name: str, parent: str | None) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": owned_by,
            "root": name,
            "parent": parent,
        }

    base = listing.base_model
    data = [entry(base, None)] if base else []
    data += [entry(a.name, base or None) for a in listing.adapters]
    return {"object": "list", "data": data}


# -- errors -----------------------------------------------------------------------------------


def error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Any exception as (HTTP status, OpenAI error body), through the same mapping as the
    gRPC API (``to_status``): the same message, no stack trace, ``code`` the gRPC status
    name in lower case (``model_not_found`` for an unknown model), ``param`` the field."""
    code, message = to_status(exc)
    status = HTTP_STATUS.get(code, 500)
    cause, param = unwrap(exc), None
    if isinstance(cause, RagtuneError) and cause.field:
        # The message names the field by the gateway's name; the caller's is `param`.
        param = PARAMS.get(cause.field, cause.field)
        message = f"{param}: {cause.message}"
    return status, {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "code": "model_not_found" if isinstance(cause, ModelNotFound) else code.name.lower(),
            "param": param,
        }
    }
