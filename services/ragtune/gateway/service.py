"""The Gateway RPCs as a plain class (no Serve decorator: ``app.py`` wraps it): authenticate,
validate, then hand answers to the pipeline (``answer.py``) and usage questions to the ledger."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

from ragtune.common.auth import KeyStore, Principal
from ragtune.common.context import CallContext
from ragtune.common.errors import InvalidArgument, PermissionDenied
from ragtune.common.validation import check_name, check_range, check_text
from ragtune.gateway.answer import AnswerPipeline, Timings
from ragtune.gateway.chunking import Chunker
from ragtune.gateway.config import GatewayConfig
from ragtune.gateway.ledger import Ledger, parse_day
from ragtune.gateway.policy import DefaultPolicy
from ragtune.gateway.routing import RoutingPolicy
from ragtune.v1 import (
    common_pb2,
    embedding_pb2,
    gateway_pb2,
    generation_pb2,
    retrieval_pb2,
)
from ragtune.v1.clients import EmbeddingClient, GenerationClient, RerankClient, RetrievalClient


class GatewayService:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        embedding: EmbeddingClient,
        retrieval: RetrievalClient,
        generation: GenerationClient,
        rerank: RerankClient | None = None,
        policy: RoutingPolicy | None = None,
        keys: KeyStore | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        if config.rerank and rerank is None:
            raise ValueError("config.rerank is on but no rerank service was given")
        self.config = config
        self.embedding, self.retrieval, self.generation = embedding, retrieval, generation
        self.rerank = rerank if config.rerank else None
        self.policy = policy or DefaultPolicy(config.router)
        self.keys = keys or KeyStore.load(Path(config.keys_file))
        self.ledger = ledger or Ledger(config.database_url)
        self.pipeline = AnswerPipeline(
            config,
            self.policy,
            self.ledger,
            embedding=embedding,
            retrieval=retrieval,
            generation=generation,
            rerank=self.rerank,
        )
        self.chunker = Chunker(config.chunking)
        self._embedder: tuple[str, int] | None = None  # (model, dims), learnt on first use

    def warm_up(self) -> None:
        self.chunker.warm_up()

    async def shutdown(self) -> None:
        self.ledger.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _principal(self, context: CallContext | None) -> Principal:
        return self.keys.principal_for((context or CallContext()).metadata)

    async def _embed(
        self, texts: list[str], input_type: embedding_pb2.InputType
    ) -> embedding_pb2.EmbedResponse:
        reply = await self.embedding.embed(
            embedding_pb2.EmbedRequest(texts=texts, input_type=input_type)
        )
        self._embedder = (reply.model, reply.dims)
        return reply

    async def _embedder_info(self) -> tuple[str, int]:
        if self._embedder is None:
            reply = await self._embed(["dimension probe"], embedding_pb2.INPUT_TYPE_QUERY)
            return reply.model, reply.dims
        return self._embedder

    def _validate_answer(self, request: gateway_pb2.AnswerRequest) -> int:
        check_text(request.question, "question", max_chars=self.config.max_question_chars)
        if request.adapter:
            check_name(request.adapter, "adapter")
        if request.collection:
            check_name(request.collection, "collection")
        for name in ("output_format", "task", "tone"):
            if len(getattr(request, name)) > 64:
                raise InvalidArgument("must be at most 64 characters", field=name)
        if request.latency_budget_ms < 0:
            raise InvalidArgument("must be >= 0 (0 means no budget)", field="latency_budget_ms")
        if request.max_cost_micro_usd < 0:
            raise InvalidArgument("must be >= 0 (0 means no budget)", field="max_cost_micro_usd")
        top_k = request.top_k or self.config.top_k
        return check_range(top_k, "top_k", 1, self.config.max_top_k)

    async def _events(
        self, request: gateway_pb2.AnswerRequest, context: CallContext | None
    ) -> AsyncIterator[gateway_pb2.AnswerEvent]:
        timings = Timings()
        with timings.stage("auth"):
            principal = self._principal(context)
        top_k = self._validate_answer(request)
        async for event in self.pipeline.events(request, principal, top_k, timings):
            yield event

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
        written = await self.retrieval.upsert(
            retrieval_pb2.UpsertRequest(tenant=tenant, collection=collection, chunks=chunks),
        )
        return gateway_pb2.IngestResponse(
            documents=len(docs), chunks=len(chunks), seq=written.seq, usage=usage
        )

    async def _create_collection(
        self, tenant: str, name: str, *, exist_ok: bool
    ) -> retrieval_pb2.CreateCollectionResponse:
        model, dims = await self._embedder_info()
        return await self.retrieval.create_collection(
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
        return await self.retrieval.delete_collection(
            retrieval_pb2.DeleteCollectionRequest(
                tenant=tenant, name=check_name(request.name, "name")
            ),
        )

    async def Feedback(
        self, request: gateway_pb2.FeedbackRequest, context: CallContext | None = None
    ) -> gateway_pb2.FeedbackResponse:
        tenant = self._principal(context).tenant
        if not request.request_id:
            raise InvalidArgument("is required", field="request_id")
        check_range(request.rating, "rating", 1, 5)
        if len(request.comment) > 2000:
            raise InvalidArgument("must be at most 2000 characters", field="comment")
        path = await asyncio.to_thread(
            self.ledger.add_feedback, tenant, request.request_id, request.rating, request.comment
        )
        return gateway_pb2.FeedbackResponse(path=f"PATH_{path}")  # the enum value by name

    async def Usage(
        self, request: gateway_pb2.UsageRequest, context: CallContext | None = None
    ) -> gateway_pb2.UsageResponse:
        tenant = self._principal(context).tenant
        until = (
            parse_day(request.until, "until") if request.until else dt.datetime.now(dt.UTC).date()
        )
        since = parse_day(request.since, "since") if request.since else until - dt.timedelta(30)
        if since > until:
            raise InvalidArgument(f"{since} is after until ({until})", field="since")
        if (until - since).days > 366:
            raise InvalidArgument("the range may span at most 366 days", field="since")
        rows = await asyncio.to_thread(self.ledger.usage, tenant, since, until)
        reply = gateway_pb2.UsageResponse(tenant=tenant)
        for row in rows:
            reply.rows.add(
                day=row.day,
                path=common_pb2.Path.Value(f"PATH_{row.path}"),
                requests=row.requests,
                cost_micro_usd=row.cost_micro_usd,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                rated=row.rated,
                mean_rating=row.mean_rating,
            )
        reply.total_cost_micro_usd = sum(row.cost_micro_usd for row in rows)
        return reply

    async def ListCollections(
        self, request: gateway_pb2.GatewayListCollectionsRequest, context: CallContext | None = None
    ) -> retrieval_pb2.ListCollectionsResponse:
        tenant = self._principal(context).tenant
        return await self.retrieval.list_collections(
            retrieval_pb2.ListCollectionsRequest(tenant=tenant)
        )

    async def ListAdapters(
        self, request: generation_pb2.ListAdaptersRequest, context: CallContext | None = None
    ) -> generation_pb2.ListAdaptersResponse:
        self._principal(context)
        return await self.generation.list_adapters(request)

    def _admin(self, context: CallContext | None) -> Principal:
        principal = self._principal(context)
        if not principal.admin:
            raise PermissionDenied("loading and unloading adapters needs an admin key")
        return principal

    async def LoadAdapter(
        self, request: generation_pb2.LoadAdapterRequest, context: CallContext | None = None
    ) -> generation_pb2.LoadAdapterResponse:
        admin = self._admin(context)
        registered = generation_pb2.LoadAdapterRequest()
        registered.CopyFrom(request)
        registered.registered_by = admin.tenant  # who, from the key: never the caller's word
        return await self.generation.load_adapter(registered)

    async def UnloadAdapter(
        self, request: generation_pb2.UnloadAdapterRequest, context: CallContext | None = None
    ) -> generation_pb2.UnloadAdapterResponse:
        self._admin(context)
        return await self.generation.unload_adapter(request)
