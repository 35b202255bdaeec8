"""The OpenAI-compatible API as a plain class (no Ray, no HTTP: ``routes.py`` serves it,
``app.py`` deploys it): resolve the model, call the gateway with the caller's metadata, shape
the reply. Tests give it a gateway client over any transport."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ragtune.common.errors import unwrap
from ragtune.common.telemetry import parent_context, tracer
from ragtune.openai_compat import mapping
from ragtune.openai_compat.config import OpenAIConfig
from ragtune.openai_compat.protocol import ChatCompletionRequest
from ragtune.v1 import gateway_pb2, generation_pb2
from ragtune.v1.clients import GatewayClient

# The gateway's client for one caller: every call carries that caller's metadata
# (`authorization`, `traceparent`), which the gateway authenticates.
Connect = Callable[[Mapping[str, str]], GatewayClient]


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event, as OpenAI streams them."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n"


class OpenAIService:
    def __init__(
        self,
        config: OpenAIConfig,
        connect: Connect,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.connect = connect
        self.clock = clock
        self._listing: generation_pb2.ListAdaptersResponse | None = None
        self._listed_at = float("-inf")  # time.monotonic() of the listing
        self._listing_lock = asyncio.Lock()

    # -- models -----------------------------------------------------------------------------------

    async def list_models(self, metadata: Mapping[str, str]) -> dict[str, Any]:
        """``GET /v1/models``: asked of the gateway each time (it authenticates the caller)."""
        listing, _ = await self._list(self.connect(metadata), older_than=time.monotonic())
        return mapping.model_list(listing, created=int(self.clock()), owned_by=self.config.owned_by)

    async def _list(
        self, gateway: GatewayClient, *, older_than: float
    ) -> tuple[generation_pb2.ListAdaptersResponse, float]:
        """The model list and when it was fetched (``time.monotonic()``), asked of the gateway
        again unless the one kept was fetched after ``older_than``. One caller at a time asks,
        with its own key: a burst of requests at start makes one call, and a caller with a bad
        key fails alone."""
        async with self._listing_lock:
            if self._listing is None or self._listed_at <= older_than:
                self._listing = await gateway.list_adapters(generation_pb2.ListAdaptersRequest())
                self._listed_at = time.monotonic()
            return self._listing, self._listed_at

    async def _adapter_for(self, model: str, gateway: GatewayClient) -> str:
        """The adapter ``model`` names ("" for the base model); ModelNotFound when it is
        neither. A name missing from the kept list is looked up again before the refusal
        (an adapter loaded moments ago)."""
        listing, listed_at = self._listing, self._listed_at
        fresh_after = time.monotonic() - self.config.models_cache_s
        if listing is None or listed_at <= fresh_after:
            listing, listed_at = await self._list(gateway, older_than=fresh_after)
        if not _serves(listing, model):
            listing, _ = await self._list(gateway, older_than=listed_at)
            if not _serves(listing, model):
                raise mapping.ModelNotFound(model)
        return "" if model == listing.base_model else model

    # -- chat completions -------------------------------------------------------------------------

    async def _request(
        self, body: ChatCompletionRequest, gateway: GatewayClient
    ) -> gateway_pb2.AnswerRequest:
        adapter = await self._adapter_for(body.model, gateway)
        return mapping.answer_request(
            body, adapter=adapter, default_collection=self.config.collection
        )

    def _span(self, body: ChatCompletionRequest, metadata: Mapping[str, str]) -> trace.Span:
        """This request's server span, continuing the HTTP caller's trace; the gateway's
        spans become its children (the transport sends the current context along)."""
        return tracer().start_span(
            "POST /v1/chat/completions",
            context=parent_context(metadata),
            kind=SpanKind.SERVER,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": body.model},
        )

    async def chat_completion(
        self, body: ChatCompletionRequest, metadata: Mapping[str, str]
    ) -> dict[str, Any]:
        """A non-streamed ``chat.completion``."""
        span = self._span(body, metadata)
        try:
            with trace.use_span(span, end_on_exit=False):
                gateway = self.connect(metadata)
                reply = await gateway.answer(await self._request(body, gateway))
            _succeeded(span, reply)
        except Exception as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()
        return mapping.completion(reply, model=body.model, created=int(self.clock()))

    async def open_stream(
        self, body: ChatCompletionRequest, metadata: Mapping[str, str]
    ) -> AsyncIterator[str]:
        """A streamed completion as server-sent events. The gateway's first event (its route
        decision) is awaited here, so what fails before any text (the key, the model, the
        request, routing) raises now and becomes an HTTP error status; what fails later is
        sent as an error event."""
        span = self._span(body, metadata)
        try:
            with trace.use_span(span, end_on_exit=False):
                gateway = self.connect(metadata)
                events = gateway.answer_stream(await self._request(body, gateway)).__aiter__()
                first = await events.__anext__()
        except BaseException as exc:
            if isinstance(exc, Exception):
                _failed(span, exc)
            span.end()
            raise
        return self._sse(body, events, first, span)

    async def _sse(
        self,
        body: ChatCompletionRequest,
        events: AsyncIterator[gateway_pb2.AnswerEvent],
        first: gateway_pb2.AnswerEvent,
        span: trace.Span,
    ) -> AsyncIterator[str]:
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(self.clock())
        common: dict[str, Any] = {
            "model": body.model,
            "created": created,
            "with_usage": body.include_usage,
        }
        # The role goes out with the first text, not before it: a tool's time to first token
        # is then the time to the first generated text, as with vLLM's server.
        role_sent = False
        try:
            event: gateway_pb2.AnswerEvent | None = first
            while event is not None:
                if event.HasField("delta") and event.delta:
                    delta = {"content": event.delta}
                    if not role_sent:
                        delta, role_sent = {"role": "assistant", **delta}, True
                    yield sse(mapping.chunk(chunk_id, delta=delta, **common))
                elif event.HasField("done"):
                    reply = event.done
                    last = mapping.extension(reply)
                    finish = {"role": "assistant", "content": ""} if not role_sent else {}
                    yield sse(
                        mapping.chunk(
                            chunk_id,
                            delta=finish,
                            finish=mapping.finish_reason(reply),
                            ragtune=None if body.include_usage else last,
                            **common,
                        )
                    )
                    if body.include_usage:
                        yield sse(
                            mapping.chunk(
                                chunk_id, usage=mapping.usage(reply), ragtune=last, **common
                            )
                        )
                    _succeeded(span, reply)
                event = await anext(events, None)
        except (GeneratorExit, asyncio.CancelledError):
            # The caller went away: stop the gateway's work too (a Serve handle's stream
            # has cancel(); Serve would also cancel it with this request, but say so here).
            span.set_attribute("ragtune.cancelled", True)
            cancel = getattr(events, "cancel", None)
            if cancel is not None:
                cancel()
            raise
        except Exception as exc:
            _failed(span, exc)
            yield sse(mapping.error(exc)[1])
        finally:
            span.end()
        yield sse("[DONE]")


def _succeeded(span: trace.Span, reply: gateway_pb2.AnswerResponse) -> None:
    span.set_attributes(
        {
            "gen_ai.usage.input_tokens": reply.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": reply.usage.completion_tokens,
            "ragtune.request_id": reply.request_id,
            "ragtune.route.path": mapping.route(reply.route)["path"],
        }
    )


def _serves(listing: generation_pb2.ListAdaptersResponse, model: str) -> bool:
    """Whether ``model`` is the base model or an adapter of ``listing``."""
    return model == listing.base_model or any(a.name == model for a in listing.adapters)


def _failed(span: trace.Span, exc: Exception) -> None:
    # The error's type only: the mapping to a status logs unknown errors once, at the edge.
    span.set_status(Status(StatusCode.ERROR, type(unwrap(exc)).__name__))
