"""The HTTP side of the OpenAI-compatible API: a FastAPI app over an ``OpenAIService``.

Built per replica by ``make_app`` (Serve mounts it under the application's route prefix,
``/v1``), and in tests over a service with a fake gateway, without Ray. Every error leaves as
OpenAI's error body with the status the gRPC API's code maps to (``mapping.error``).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ragtune.openai_compat import mapping
from ragtune.openai_compat.protocol import ChatCompletionRequest
from ragtune.openai_compat.service import OpenAIService

# Request headers passed on to the gateway as its gRPC metadata: the key it authenticates,
# and the caller's trace context.
FORWARDED_HEADERS = ("authorization", "traceparent", "tracestate")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def caller_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in FORWARDED_HEADERS if name in headers}


def parse_body(raw: bytes) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate_json(raw)
    except ValidationError as err:
        raise mapping.invalid_body(err) from None


def error_response(exc: BaseException) -> JSONResponse:
    status, body = mapping.error(exc)
    return JSONResponse(body, status_code=status)


def make_app(service: OpenAIService) -> FastAPI:
    # No generated docs: the API is OpenAI's, and docs/openai-api.md says what differs.
    app = FastAPI(title="ragtune", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            body = parse_body(await request.body())
            metadata = caller_metadata(request.headers)
            if body.stream:
                events = await service.open_stream(body, metadata)
                return StreamingResponse(
                    events, media_type="text/event-stream", headers=SSE_HEADERS
                )
            return JSONResponse(await service.chat_completion(body, metadata))
        except Exception as exc:
            return error_response(exc)

    @app.get("/models")
    async def models(request: Request) -> Response:
        try:
            return JSONResponse(await service.list_models(caller_metadata(request.headers)))
        except Exception as exc:
            return error_response(exc)

    @app.exception_handler(HTTPException)
    async def not_served(request: Request, exc: HTTPException) -> Response:
        # An unknown path or method, in OpenAI's shape rather than FastAPI's.
        message = (
            f"{request.method} {request.url.path} is not served here: ragtune serves "
            "POST /v1/chat/completions and GET /v1/models (docs/openai-api.md)"
        )
        kind = mapping.ERROR_TYPES.get(exc.status_code, "invalid_request_error")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return JSONResponse(
            {"error": {"message": message, "type": kind, "code": code, "param": None}},
            status_code=exc.status_code,
        )

    return app
