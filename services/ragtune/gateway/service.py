"""The Gateway RPCs as a plain class (no Ray): authenticate, route, run the path's stages."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from ragtune.common.auth import KeyStore, Principal
from ragtune.common.clients import ServiceClient
from ragtune.common.context import CallContext
from ragtune.common.errors import InvalidArgument, PermissionDenied
from ragtune.common.validation import check_name, check_range, check_text
from ragtune.gateway.chunking import Chunker
from ragtune.gateway.config import GatewayConfig
from ragtune.gateway.routing import Route, Router, RuleRouter
from ragtune.v1 import (
    common_pb2,
    embedding_pb2,
    gateway_pb2,
    generation_pb2,
    rerank_pb2,
    retrieval_pb2,
)


class Timings:
    """Collects StageTiming entries in the order stages run."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stages: list[common_pb2.StageTiming] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages.append(
                common_pb2.StageTiming(stage=name, ms=(time.perf_counter() - start) * 1000)
            )

    def done(self) -> list[common_pb2.StageTiming]:
        total = common_pb2.StageTiming(stage="total", ms=(time.perf_counter() - self.start) * 1000)
        return [*self.stages, total]


class GatewayService:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        embedding: ServiceClient,
        retrieval: ServiceClient,
        generation: ServiceClient,
        rerank: ServiceClient | None = None,
        router: Router | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        if config.rerank and rerank is None:
            raise ValueError("config.rerank is on but no rerank service was given")
        self.config = config
        self.embedding, self.retrieval, self.generation = embedding, retrieval, generation
        self.rerank = rerank if config.rerank else None
        self.router = router or RuleRouter(config.default_collection)
        self.keys = keys or KeyStore.load(Path(config.keys_file))
        self.chunker = Chunker(config.chunking)
        self._embedder: tuple[str, int] | None = None  # (model, dims), learnt on first use

    def warm_up(self) -> None:
        self.chunker.warm_up()

    # -- helpers ---------------------------------------------------------------------------------

    def _principal(self, context: CallContext | None) -> Principal:
        return self.keys.principal_for((context or CallContext()).metadata)

    async def _embed(self, texts: list[str], input_type: int) -> embedding_pb2.EmbedResponse:
        reply = await self.embedding.call(
            "Embed", embedding_pb2.EmbedRequest(texts=texts, input_type=input_type)
        )
        self._embedder = (reply.model, reply.dims)
        return reply

    async def _embedder_info(self) -> tuple[str, int]:
        if self._embedder is None:
            await self._embed(["dimension probe"], embedding_pb2.INPUT_TYPE_QUERY)
        return self._embedder

    def _validate_answer(self, request: gateway_pb2.AnswerRequest) -> int:
        check_text(request.question, "question", max_chars=self.config.max_question_chars)
        top_k = request.top_k or self.config.top_k
        return check_range(top_k, "top_k", 1, self.config.max_top_k)

    async def _retrieve(
        self,
        question: str,
        route: Route,
        tenant: str,
        top_k: int,
        filter: dict[str, str],
        timings: Timings,
        usage: common_pb2.Usage,
    ) -> list[tuple[common_pb2.Citation, str]]:
        """Citations for the passages given to the model, each with the passage's full text."""
        with timings.stage("embed"):
            query = await self._embed([question], embedding_pb2.INPUT_TYPE_QUERY)
        usage.embedding_tokens = sum(query.token_counts)
        with timings.stage("retrieve"):
            found = await self.retrieval.call(
                "Search",
                retrieval_pb2.SearchRequest(
                    tenant=tenant,
                    collection=route.collection,
                    query_vector=query.vectors[0].values,
                    top_k=max(top_k, self.config.rerank_candidates) if self.rerank else top_k,
                    filter=filter,
                ),
            )
        hits = [(h.chunk, h.score) for h in found.hits]
        if self.rerank is not None and hits:
            with timings.stage("rerank"):
                ranked = await self.rerank.call(
                    "Rerank",
                    rerank_pb2.RerankRequest(
                        query=question, passages=[c.text for c, _ in hits], top_n=top_k
                    ),
                )
            usage.rerank_tokens = ranked.tokens
            hits = [(hits[r.index][0], r.score) for r in ranked.results]
        return [
            (
                common_pb2.Citation(
                    marker=i,
                    doc_id=chunk.doc_id,
                    chunk_id=chunk.chunk_id,
                    score=score,
                    snippet=chunk.text[: self.config.snippet_chars],
                    metadata=chunk.metadata,
                ),
                chunk.text,
            )
            for i, (chunk, score) in enumerate(hits[:top_k], start=1)
        ]

    async def _events(
        self, request: gateway_pb2.AnswerRequest, context: CallContext | None
    ) -> AsyncIterator[gateway_pb2.AnswerEvent]:
        timings = Timings()
        with timings.stage("auth"):
            tenant = self._principal(context).tenant
        top_k = self._validate_answer(request)
        with timings.stage("route"):
            route = self.router.decide(request, tenant)
        yield gateway_pb2.AnswerEvent(route=route.to_pb())

        usage = common_pb2.Usage()
        passages: list[tuple[common_pb2.Citation, str]] = []
        if route.retrieves:
            passages = await self._retrieve(
                request.question, route, tenant, top_k, dict(request.filter), timings, usage
            )
        citations = [c for c, _ in passages]
        sampling = generation_pb2.GenerateRequest().sampling
        sampling.CopyFrom(request.sampling)
        sampling.max_tokens = sampling.max_tokens or self.config.default_max_tokens
        generate = generation_pb2.GenerateRequest(
            messages=[generation_pb2.ChatMessage(role="user", content=request.question)],
            sampling=sampling,
            adapter=route.adapter,
            context=[
                generation_pb2.ContextPassage(marker=c.marker, source=c.doc_id, text=text)
                for c, text in passages
            ],
        )
        finish = ""
        with timings.stage("generate"):
            async for piece in self.generation.stream(
                "GenerateStream", generate, model_id=route.adapter
            ):
                if piece.delta:
                    yield gateway_pb2.AnswerEvent(delta=piece.delta)
                if piece.finish_reason:
                    finish = piece.finish_reason
                    usage.prompt_tokens = piece.prompt_tokens
                    usage.completion_tokens = piece.completion_tokens
        yield gateway_pb2.AnswerEvent(
            done=gateway_pb2.AnswerResponse(
                route=route.to_pb(),
                citations=citations,
                usage=usage,
                timings=timings.done(),
                finish_reason=finish,
            )
        )

    # -- RPCs ------------------------------------------------------------------------------------

    async def AnswerStream(
        self, request: gateway_pb2.AnswerRequest, context: CallContext | None = None
    ) -> AsyncIterator[gateway_pb2.AnswerEvent]:
        async for event in self._events(request, context):
            yield event

    async def Answer(
        self, request: gateway_pb2.AnswerRequest, context: CallContext | None = None
    ) -> gateway_pb2.AnswerResponse:
        parts: list[str] = []
        reply = gateway_pb2.AnswerResponse()
        async for event in self._events(request, context):
            if event.HasField("delta"):
                parts.append(event.delta)
            elif event.HasField("done"):
                reply.CopyFrom(event.done)
        reply.answer = "".join(parts)
        return reply

    async def Ingest(
        self, request: gateway_pb2.IngestRequest, context: CallContext | None = None
    ) -> gateway_pb2.IngestResponse:
        tenant = self._principal(context).tenant
        collection = check_name(request.collection or self.config.default_collection, "collection")
        docs = list(request.documents)
        if not docs:
            raise InvalidArgument("must contain at least one document", field="documents")
        if len(docs) > self.config.max_documents_per_ingest:
            raise InvalidArgument(
                f"has {len(docs)} documents; the limit per call is "
                f"{self.config.max_documents_per_ingest}",
                field="documents",
            )
        seen: set[str] = set()
        for i, doc in enumerate(docs):
            if not doc.doc_id or doc.doc_id in seen:
                raise InvalidArgument(
                    "must be non-empty and unique in the request", field=f"documents[{i}].doc_id"
                )
            seen.add(doc.doc_id)
            check_text(doc.text, f"documents[{i}].text", max_chars=self.config.max_document_chars)
        if request.create_collection:
            await self._create_collection(tenant, collection, exist_ok=True)

        chunks: list[retrieval_pb2.Chunk] = []
        for doc in docs:
            text = f"# {doc.title}\n\n{doc.text}" if doc.title else doc.text
            for n, piece in enumerate(self.chunker.split(text)):
                meta = dict(doc.metadata)
                if doc.title:
                    meta.setdefault("title", doc.title)
                chunks.append(
                    retrieval_pb2.Chunk(
                        chunk_id=f"{doc.doc_id}#{n}", doc_id=doc.doc_id, text=piece, metadata=meta
                    )
                )
        usage = common_pb2.Usage()
        batch = self.config.embed_batch_size
        for start in range(0, len(chunks), batch):
            part = chunks[start : start + batch]
            reply = await self._embed([c.text for c in part], embedding_pb2.INPUT_TYPE_PASSAGE)
            usage.embedding_tokens += sum(reply.token_counts)
            for chunk, vector in zip(part, reply.vectors, strict=True):
                chunk.vector.extend(vector.values)
        written = await self.retrieval.call(
            "Upsert",
            retrieval_pb2.UpsertRequest(tenant=tenant, collection=collection, chunks=chunks),
        )
        return gateway_pb2.IngestResponse(
            documents=len(docs), chunks=len(chunks), seq=written.seq, usage=usage
        )

    async def _create_collection(
        self, tenant: str, name: str, *, exist_ok: bool
    ) -> retrieval_pb2.CreateCollectionResponse:
        model, dims = await self._embedder_info()
        return await self.retrieval.call(
            "CreateCollection",
            retrieval_pb2.CreateCollectionRequest(
                tenant=tenant, name=name, dims=dims, embedding_model=model, exist_ok=exist_ok
            ),
        )

    async def CreateCollection(
        self, request: gateway_pb2.GatewayCollectionRequest, context: CallContext | None = None
    ) -> retrieval_pb2.CreateCollectionResponse:
        tenant = self._principal(context).tenant
        return await self._create_collection(
            tenant, check_name(request.name, "name"), exist_ok=False
        )

    async def DeleteCollection(
        self, request: gateway_pb2.GatewayCollectionRequest, context: CallContext | None = None
    ) -> retrieval_pb2.DeleteCollectionResponse:
        tenant = self._principal(context).tenant
        return await self.retrieval.call(
            "DeleteCollection",
            retrieval_pb2.DeleteCollectionRequest(
                tenant=tenant, name=check_name(request.name, "name")
            ),
        )

    async def ListCollections(
        self, request: gateway_pb2.GatewayListCollectionsRequest, context: CallContext | None = None
    ) -> retrieval_pb2.ListCollectionsResponse:
        tenant = self._principal(context).tenant
        return await self.retrieval.call(
            "ListCollections", retrieval_pb2.ListCollectionsRequest(tenant=tenant)
        )

    async def ListAdapters(
        self, request: generation_pb2.ListAdaptersRequest, context: CallContext | None = None
    ) -> generation_pb2.ListAdaptersResponse:
        self._principal(context)
        return await self.generation.call("ListAdapters", request)

    def _admin(self, context: CallContext | None) -> None:
        if not self._principal(context).admin:
            raise PermissionDenied("loading and unloading adapters needs an admin key")

    async def LoadAdapter(
        self, request: generation_pb2.LoadAdapterRequest, context: CallContext | None = None
    ) -> generation_pb2.LoadAdapterResponse:
        self._admin(context)
        return await self.generation.call("LoadAdapter", request)

    async def UnloadAdapter(
        self, request: generation_pb2.UnloadAdapterRequest, context: CallContext | None = None
    ) -> generation_pb2.UnloadAdapterResponse:
        self._admin(context)
        return await self.generation.call("UnloadAdapter", request)
