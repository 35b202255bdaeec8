"""The gateway's Python client: ``GatewayClient`` (blocking) and ``AsyncGatewayClient``
(asyncio), one method per Gateway RPC, typed with the generated messages. docs/client.md.

Both send every call with ``authorization: Bearer <key>`` and ``application: gateway`` (the
local ingress, HAProxy or Serve's gRPC proxy, routes on it), a deadline (the client's
``timeout_s`` or a call's ``timeout=``), and ``SERVICE_CONFIG``: gRPC itself retries the
idempotent RPCs on UNAVAILABLE, and nothing else. Errors are grpc's own ``grpc.RpcError``
(``grpc.aio.AioRpcError`` under asyncio), with ``code()`` and ``details()``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypedDict, Unpack

import grpc
import grpc.aio

from ragtune.common.services import GATEWAY
from ragtune.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generation_pb2, retrieval_pb2

Document = gateway_pb2.Document  # what ingest() takes, re-exported for callers

DEFAULT_TARGET = "localhost:9000"  # `ragtune serve`'s gRPC port
PATHS: dict[str, common_pb2.Path] = {
    "auto": common_pb2.PATH_AUTO,
    "rag": common_pb2.PATH_RAG,
    "tuned": common_pb2.PATH_TUNED,
    "hybrid": common_pb2.PATH_HYBRID,
}
PathName = Literal["auto", "rag", "tuned", "hybrid"]

(_GATEWAY,) = gateway_pb2.DESCRIPTOR.services_by_name.values()  # gateway.proto's one service
SERVICE_NAME: str = _GATEWAY.full_name
# Retried by gRPC on UNAVAILABLE: the RPCs whose repetition leaves the same state and answer,
# as gateway.proto marks them (`option idempotency_level`: NO_SIDE_EFFECTS or IDEMPOTENT).
# Not Answer/AnswerStream (each call is generated, priced and written to the usage ledger),
# Feedback (a second rating row), LoadAdapter/UnloadAdapter (admin actions whose outcome the
# caller should see), CreateCollection (ALREADY_EXISTS on the repeat) and DeleteCollection
# (NOT_FOUND on the repeat: a success reported as an error). docs/client.md#retries.
RETRIED_RPCS: tuple[str, ...] = tuple(
    m.name
    for m in _GATEWAY.methods
    if m.GetOptions().idempotency_level != m.GetOptions().IDEMPOTENCY_UNKNOWN
)
SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": SERVICE_NAME, "method": rpc} for rpc in RETRIED_RPCS],
            "retryPolicy": {
                # gRPC (C core) waits initialBackoff * multiplier^(n-1), capped at maxBackoff,
                # +-20% at random, before attempt n+1; all within the call's one deadline.
                "maxAttempts": 4,
                "initialBackoff": "0.2s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                # RESOURCE_EXHAUSTED (queue full, quota) is left to the caller: retrying an
                # overloaded gateway within a second only adds to its load.
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    # Each failure costs a token, each success gives back 0.1; below 5 of 10, gRPC stops
    # retrying on this channel, so an outage is not multiplied by maxAttempts.
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}
# gRPC retries only what it buffered; the default 256 KiB would leave large Ingest batches
# unretried. 4 MiB is the server's default message limit.
RETRY_BUFFER_BYTES = 4 * 1024 * 1024


def retry_options(
    service_config: Mapping[str, Any] = SERVICE_CONFIG,
) -> list[tuple[str, Any]]:
    """The gRPC channel options that make a channel retry as this client does (for channels
    made elsewhere: the load generator's chaos run)."""
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
    ]


# The gateway's budget header (ragtune.gateway.deadline.TIMEOUT_HEADER; the client does not
# import the gateway package, so it is spelt here too and a unit test checks both agree).
TIMEOUT_HEADER = "ragtune-timeout-ms"


class AnswerOptions(TypedDict, total=False):
    """The AnswerRequest fields answer() and answer_stream() take as keywords (gateway.proto)."""

    adapter: str
    collection: str
    top_k: int
    sampling: common_pb2.SamplingParams | Mapping[str, Any]
    filter: Mapping[str, str]
    require_citations: bool
    freshness_sensitive: bool
    output_format: str
    task: str
    tone: str
    latency_budget_ms: int
    max_cost_micro_usd: int


# -- requests, built in one place for both clients -------------------------------------------


def answer_request(
    question: str, path: PathName | common_pb2.Path = "auto", **options: Unpack[AnswerOptions]
) -> gateway_pb2.AnswerRequest:
    """The AnswerRequest both clients send; ``path`` by name or as a ``common_pb2.Path``."""
    if isinstance(path, str):
        if path.lower() not in PATHS:
            raise ValueError(f"path: {path!r} is not one of {', '.join(PATHS)}")
        path = PATHS[path.lower()]
    return gateway_pb2.AnswerRequest(question=question, path=path, **options)


def _ingest(
    collection: str,
    documents: Iterable[gateway_pb2.Document],
    create: bool,
    ingest_id: str,
    source: str,
    final: bool,
) -> gateway_pb2.IngestRequest:
    return gateway_pb2.IngestRequest(
        collection=collection,
        documents=documents,
        create_collection=create,
        ingest_id=ingest_id,
        source=source,
        final=final,
    )


def _create_collection(
    name: str, index_type: str, metric: str, lexical: bool
) -> gateway_pb2.GatewayCreateCollectionRequest:
    return gateway_pb2.GatewayCreateCollectionRequest(
        name=name, index_type=index_type, metric=metric, lexical=lexical
    )


def _collection(name: str) -> gateway_pb2.GatewayCollectionRequest:
    return gateway_pb2.GatewayCollectionRequest(name=name)


def _delete_documents(
    collection: str, doc_ids: Iterable[str]
) -> gateway_pb2.DeleteDocumentsRequest:
    return gateway_pb2.DeleteDocumentsRequest(collection=collection, doc_ids=list(doc_ids))


def _feedback(
    request_id: str, rating: int, comment: str, preferred_path: PathName | common_pb2.Path | None
) -> gateway_pb2.FeedbackRequest:
    request = gateway_pb2.FeedbackRequest(request_id=request_id, rating=rating, comment=comment)
    if preferred_path is not None:
        request.preferred_path = answer_request("", preferred_path).path
    return request


def _usage(since: str, until: str) -> gateway_pb2.UsageRequest:
    return gateway_pb2.UsageRequest(since=since, until=until)


def _load_adapter(name: str, source: str) -> generation_pb2.LoadAdapterRequest:
    return generation_pb2.LoadAdapterRequest(name=name, source=source)


def _unload_adapter(name: str) -> generation_pb2.UnloadAdapterRequest:
    return generation_pb2.UnloadAdapterRequest(name=name)


_LIST_COLLECTIONS = gateway_pb2.GatewayListCollectionsRequest()
_LIST_ADAPTERS = generation_pb2.ListAdaptersRequest()


# -- streaming -------------------------------------------------------------------------------


class _StreamState:
    """What an AnswerStream has shown so far: the route, the text, the final event."""

    def __init__(self) -> None:
        self.route: common_pb2.RouteDecision | None = None
        self.parts: list[str] = []
        self.done: gateway_pb2.AnswerResponse | None = None

    def observe(self, event: gateway_pb2.AnswerEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "route":
            self.route = event.route
        elif kind == "delta":
            self.parts.append(event.delta)
        elif kind == "done":
            self.done = event.done

    def result(self) -> gateway_pb2.AnswerResponse:
        if self.done is None:
            raise RuntimeError("AnswerStream ended without its final event")
        reply = gateway_pb2.AnswerResponse()
        reply.CopyFrom(self.done)
        reply.answer = "".join(self.parts)
        return reply


class AnswerStream:
    """A running AnswerStream call. Iterate it for the events (``route``, then ``delta``s,
    then ``done``), or ``text()`` for the answer text as it comes; ``route`` is the route
    decision once it arrived, ``result()`` reads to the end and returns the whole reply as
    ``answer()`` would have. Iterations share one stream: each event comes once. Leaving a
    ``with`` block, or ``cancel()``, cancels the call (and so the generation behind it)."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._state = _StreamState()

    @property
    def route(self) -> common_pb2.RouteDecision | None:
        return self._state.route

    def __iter__(self) -> Iterator[gateway_pb2.AnswerEvent]:
        return self

    def __next__(self) -> gateway_pb2.AnswerEvent:
        event: gateway_pb2.AnswerEvent = next(self._call)
        self._state.observe(event)
        return event

    def text(self) -> Iterator[str]:
        """The answer's text deltas, as they are generated."""
        for event in self:
            if event.WhichOneof("event") == "delta":
                yield event.delta

    def result(self) -> gateway_pb2.AnswerResponse:
        """Reads the rest of the stream; the complete reply, its ``answer`` text included."""
        for _ in self:
            pass
        return self._state.result()

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> AnswerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()  # a no-op once the stream ended


class AsyncAnswerStream:
    """``AnswerStream`` under asyncio: ``async for`` events, ``async for`` over ``text()``,
    ``await result()``, ``async with``."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._state = _StreamState()

    @property
    def route(self) -> common_pb2.RouteDecision | None:
        return self._state.route

    def __aiter__(self) -> AsyncAnswerStream:
        return self

    async def __anext__(self) -> gateway_pb2.AnswerEvent:
        event = await self._call.read()
        if event is grpc.aio.EOF:
            raise StopAsyncIteration
        self._state.observe(event)
        return event

    async def text(self) -> AsyncIterator[str]:
        async for event in self:
            if event.WhichOneof("event") == "delta":
                yield event.delta

    async def result(self) -> gateway_pb2.AnswerResponse:
        async for _ in self:
            pass
        return self._state.result()

    def cancel(self) -> None:
        self._call.cancel()

    async def __aenter__(self) -> AsyncAnswerStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


# -- the clients -----------------------------------------------------------------------------


class _Connection:
    """Settings and call options shared by both clients."""

    def __init__(
        self,
        target: str | None,
        api_key: str | None,
        *,
        tls: bool | grpc.ChannelCredentials,
        application: str,
        timeout_s: float | None,
        options: Sequence[tuple[str, Any]],
        service_config: Mapping[str, Any] | None,
    ) -> None:
        self.target = target or os.environ.get("RAGTUNE_TARGET") or DEFAULT_TARGET
        key = os.environ.get("RAGTUNE_API_KEY", "") if api_key is None else api_key
        self.metadata: list[tuple[str, str]] = [("application", application)]
        if key:
            self.metadata.append(("authorization", f"Bearer {key}"))
        self.timeout_s = timeout_s
        self.credentials = grpc.ssl_channel_credentials() if tls is True else tls or None
        # The caller's options first: of an option given twice, gRPC takes the first.
        self.channel_options: list[tuple[str, Any]] = list(options)
        if service_config is not None:
            self.channel_options += retry_options(service_config)

    def _call_options(self, timeout: float | None) -> dict[str, Any]:
        deadline = self.timeout_s if timeout is None else timeout
        metadata = self.metadata
        if deadline is not None:
            # Serve's ingresses drop gRPC's own deadline before the gateway sees it: the same
            # budget goes as metadata, so the gateway stops work the caller no longer waits for.
            metadata = [*metadata, (TIMEOUT_HEADER, str(max(1, int(deadline * 1000))))]
        return {"metadata": metadata, "timeout": deadline}


class GatewayClient(_Connection):
    """Blocking client of the Gateway.

    ``target``: "host:port" (default ``$RAGTUNE_TARGET``, else localhost:9000); ``api_key``
    (default ``$RAGTUNE_API_KEY``); ``tls``: True for TLS with the system's root
    certificates, or ``grpc.ssl_channel_credentials(...)`` of your own; ``timeout_s``: each
    call's deadline unless it passes ``timeout=`` (None: no deadline); ``options``: extra
    gRPC channel options; ``service_config``: None turns the retries off.
    """

    def __init__(
        self,
        target: str | None = None,
        api_key: str | None = None,
        *,
        tls: bool | grpc.ChannelCredentials = False,
        application: str = GATEWAY.name,
        timeout_s: float | None = 120,
        options: Sequence[tuple[str, Any]] = (),
        service_config: Mapping[str, Any] | None = SERVICE_CONFIG,
    ) -> None:
        super().__init__(target, api_key, tls=tls, application=application,
                         timeout_s=timeout_s, options=options, service_config=service_config)  # fmt: skip
        if self.credentials is None:
            self.channel = grpc.insecure_channel(self.target, self.channel_options)
        else:
            self.channel = grpc.secure_channel(self.target, self.credentials, self.channel_options)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        return method(request, **self._call_options(timeout))

    def answer(
        self,
        question: str,
        *,
        path: PathName | common_pb2.Path = "auto",
        timeout: float | None = None,
        **options: Unpack[AnswerOptions],
    ) -> gateway_pb2.AnswerResponse:
        """Answers ``question``; ``options`` are AnswerRequest fields (``collection=``, ...)."""
        return self._unary(self.stub.Answer, answer_request(question, path, **options), timeout)

    def answer_stream(
        self,
        question: str,
        *,
        path: PathName | common_pb2.Path = "auto",
        timeout: float | None = None,
        **options: Unpack[AnswerOptions],
    ) -> AnswerStream:
        """Same as ``answer``, streamed: see ``AnswerStream``."""
        request = answer_request(question, path, **options)
        return AnswerStream(self.stub.AnswerStream(request, **self._call_options(timeout)))

    def ingest(
        self,
        collection: str,
        documents: Iterable[gateway_pb2.Document],
        *,
        create: bool = True,
        ingest_id: str = "",
        source: str = "",
        final: bool = False,
        timeout: float | None = None,
    ) -> gateway_pb2.IngestResponse:
        """Chunks, embeds and stores ``documents`` (replacing those with the same doc_id)."""
        request = _ingest(collection, documents, create, ingest_id, source, final)
        return self._unary(self.stub.Ingest, request, timeout)

    def create_collection(
        self,
        name: str,
        *,
        index_type: str = "",
        metric: str = "",
        lexical: bool = False,
        timeout: float | None = None,
    ) -> retrieval_pb2.CreateCollectionResponse:
        request = _create_collection(name, index_type, metric, lexical)
        return self._unary(self.stub.CreateCollection, request, timeout)

    def get_collection(
        self, name: str, *, timeout: float | None = None
    ) -> gateway_pb2.GetCollectionResponse:
        return self._unary(self.stub.GetCollection, _collection(name), timeout)

    def delete_collection(
        self, name: str, *, timeout: float | None = None
    ) -> retrieval_pb2.DeleteCollectionResponse:
        return self._unary(self.stub.DeleteCollection, _collection(name), timeout)

    def delete_documents(
        self, collection: str, doc_ids: Iterable[str], *, timeout: float | None = None
    ) -> gateway_pb2.DeleteDocumentsResponse:
        return self._unary(
            self.stub.DeleteDocuments, _delete_documents(collection, doc_ids), timeout
        )

    def list_collections(
        self, *, timeout: float | None = None
    ) -> retrieval_pb2.ListCollectionsResponse:
        return self._unary(self.stub.ListCollections, _LIST_COLLECTIONS, timeout)

    def list_adapters(self, *, timeout: float | None = None) -> generation_pb2.ListAdaptersResponse:
        return self._unary(self.stub.ListAdapters, _LIST_ADAPTERS, timeout)

    def load_adapter(
        self, name: str, source: str = "", *, timeout: float | None = None
    ) -> generation_pb2.LoadAdapterResponse:
        return self._unary(self.stub.LoadAdapter, _load_adapter(name, source), timeout)

    def unload_adapter(
        self, name: str, *, timeout: float | None = None
    ) -> generation_pb2.UnloadAdapterResponse:
        return self._unary(self.stub.UnloadAdapter, _unload_adapter(name), timeout)

    def route(
        self,
        question: str,
        *,
        path: PathName | common_pb2.Path = "auto",
        timeout: float | None = None,
        **options: Unpack[AnswerOptions],
    ) -> common_pb2.RouteDecision:
        """The route ``answer`` would take, explained, without answering."""
        return self._unary(self.stub.Route, answer_request(question, path, **options), timeout)

    def feedback(
        self,
        request_id: str,
        rating: int,
        comment: str = "",
        *,
        preferred_path: PathName | common_pb2.Path | None = None,
        timeout: float | None = None,
    ) -> gateway_pb2.FeedbackResponse:
        """Rates an answer; ``preferred_path`` says which path should have answered."""
        request = _feedback(request_id, rating, comment, preferred_path)
        return self._unary(self.stub.Feedback, request, timeout)

    def usage(
        self, since: str = "", until: str = "", *, timeout: float | None = None
    ) -> gateway_pb2.UsageResponse:
        return self._unary(self.stub.Usage, _usage(since, until), timeout)


class AsyncGatewayClient(_Connection):
    """``GatewayClient`` under asyncio (grpc.aio): the same constructor and methods, as
    coroutines; ``answer_stream`` returns an ``AsyncAnswerStream``. Make it inside the
    event loop that uses it (``async with AsyncGatewayClient(...) as client:``)."""

    def __init__(
        self,
        target: str | None = None,
        api_key: str | None = None,
        *,
        tls: bool | grpc.ChannelCredentials = False,
        application: str = GATEWAY.name,
        timeout_s: float | None = 120,
        options: Sequence[tuple[str, Any]] = (),
        service_config: Mapping[str, Any] | None = SERVICE_CONFIG,
    ) -> None:
        super().__init__(target, api_key, tls=tls, application=application,
                         timeout_s=timeout_s, options=options, service_config=service_config)  # fmt: skip
        if self.credentials is None:
            self.channel = grpc.aio.insecure_channel(self.target, self.channel_options)
        else:
            self.channel = grpc.aio.secure_channel(
                self.target, self.credentials, self.channel_options
            )
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        return await method(request, **self._call_options(timeout))

    async def answer(
        self,
        question: str,
        *,
        path: PathName | common_pb2.Path = "auto",
        timeout: float | None = None,
        **options: Unpack[AnswerOptions],
    ) -> gateway_pb2.AnswerResponse:
        return await self._unary(
            self.stub.Answer, answer_request(question, path, **options), timeout
        )

    def answer_stream(
        self,
        question: str,
        *,
        path: PathName | common_pb2.Path = "auto",
        timeout: float | None = None,
        **options: Unpack[AnswerOptions],
    ) -> AsyncAnswerStream:
        request = answer_request(question, path, **options)
        return AsyncAnswerStream(self.stub.AnswerStream(request, **self._call_options(timeout)))

    async def ingest(
        self,
        collection: str,
        documents: Iterable[gateway_pb2.Document],
        *,
        create: bool = True,
        ingest_id: str = "",
        source: str = "",
        final: bool = False,
        timeout: float | None = None,
    ) -> gateway_pb2.IngestResponse:
        request = _ingest(collection, documents, create, ingest_id, source, final)
        return await self._unary(self.stub.Ingest, request, timeout)

    async def create_collection(
        self,
        name: str,
        *,
        index_type: str = "",
        metric: str = "",
        lexical: bool = False,
        timeout: float | None = None,
    ) -> retrieval_pb2.CreateCollectionResponse:
        request = _create_collection(name, index_type, metric, lexical)
        return await self._unary(self.stub.CreateCollection, request, timeout)

    async def get_collection(
        self, name: str, *, timeout: float | None = None
    ) -> gateway_pb2.GetCollectionResponse:
        return await self._unary(self.stub.GetCollection, _collection(name), timeout)

    async def delete_collection(
        self, name: str, *, timeout: float | None = None
    ) -> retrieval_pb2.DeleteCollectionResponse:
        return await self._unary(self.stub.DeleteCollection, _collection(name), timeout)

    async def delete_documents(
        self, collection: str, doc_ids: Iterable[str], *, timeout: float | None = None
    ) -> gateway_pb2.DeleteDocumentsResponse:
        request = _delete_documents(collection, doc_ids)
        return await self._unary(self.stub.DeleteDocuments, request, timeout)

    async def list_collections(
        self, *, timeout: float | None = None
    ) -> retrieval_pb2.ListCollectionsResponse:
        return await self._unary(self.stub.ListCollections, _LIST_COLLECTIONS, timeout)

    async def list_adapters(
        self, *, timeout: float | None = None
    ) -> generation_pb2.ListAdaptersResponse:
        return await self._unary(self.stub.ListAdapters, _LIST_ADAPTERS, timeout)

    async def load_adapter(
        self, name: str, source: str = "", *, timeout: float | None = None
    ) -> generation_pb2.LoadAdapterResponse:
        return await self._unary(self.stub.LoadAdapter, _load_adapter(name, source), timeout)

    async def unload_adapter(
        self, name: str, *, timeout: float | None = None
    ) -> generation_pb2.UnloadAdapterResponse:
        return await self._unary(self.stub.UnloadAdapter, _unload_adapter(name), timeout)

    async def route(
        self,
        question: str,
        *,
        path: PathName | common_pb2.Path = "auto",
        timeout: float | None = None,
        **options: Unpack[AnswerOptions],
    ) -> common_pb2.RouteDecision:
        return await self._unary(
            self.stub.Route, answer_request(question, path, **options), timeout
        )

    async def feedback(
        self,
        request_id: str,
        rating: int,
        comment: str = "",
        *,
        preferred_path: PathName | common_pb2.Path | None = None,
        timeout: float | None = None,
    ) -> gateway_pb2.FeedbackResponse:
        request = _feedback(request_id, rating, comment, preferred_path)
        return await self._unary(self.stub.Feedback, request, timeout)

    async def usage(
        self, since: str = "", until: str = "", *, timeout: float | None = None
    ) -> gateway_pb2.UsageResponse:
        return await self._unary(self.stub.Usage, _usage(since, until), timeout)
