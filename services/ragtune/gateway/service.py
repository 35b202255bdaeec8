"""The Gateway RPCs as a plain class (no Serve decorator: ``app.py`` wraps it): authenticate,
validate, then hand answers to the pipeline (``answer.py``) and usage questions to the ledger."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from ragtune.common.auth import KeyStore, Principal
from ragtune.common.context import CallContext
from ragtune.common.errors import InvalidArgument, NotFound, PermissionDenied, unwrap
from ragtune.common.validation import check_name, check_range, check_text
from ragtune.gateway.answer import AnswerPipeline, Timings
from ragtune.gateway.calibration import CalibrationStore, Calibrator
from ragtune.gateway.chunking import Chunker
from ragtune.gateway.config import GatewayConfig
from ragtune.gateway.deadline import TIMEOUT_HEADER, Deadline
from ragtune.gateway.feedback import RouterFeedback
from ragtune.gateway.ingestruns import IngestRun, IngestRuns
from ragtune.gateway.input_limits import check_ingest_size, limited
from ragtune.gateway.ledger import Ledger, day_range
from ragtune.gateway.policy import DefaultPolicy
from ragtune.gateway.quotas import Quotas
from ragtune.gateway.routing import RoutingPolicy
from ragtune.v1 import (
    common_pb2,
    embedding_pb2,
    gateway_pb2,
    generation_pb2,
    retrieval_pb2,
)
from ragtune.v1.clients import EmbeddingClient, GenerationClient, RerankClient, RetrievalClient

INGEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
EMBED_BATCHES_IN_FLIGHT = 4  # per Ingest call


def _run_pb(run: IngestRun) -> gateway_pb2.IngestRun:
    def rfc3339(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")

    return gateway_pb2.IngestRun(
        ingest_id=run.ingest_id,
        source=run.source,
        documents=run.documents,
        chunks=run.chunks,
        started_at=rfc3339(run.started_unix_ms),
        updated_at=rfc3339(run.updated_unix_ms),
        complete=run.complete,
    )


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
        self.keys = keys or KeyStore.open(
            config.database_url, keys_file=Path(config.keys_file), refresh_s=config.keys_refresh_s
        )
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
        self.ingest_runs = IngestRuns(self.ledger.engine)
        router = config.router
        self.calibrator = Calibrator(
            CalibrationStore(self.ledger.engine, router.calibration),
            self.pipeline.embed_texts,
            self._dense_search,
        )
        self.router_feedback = RouterFeedback(
            self.ledger.engine, router.feedback, cache_s=router.calibration.cache_s
        )
        self.pipeline.calibrator, self.pipeline.feedback = self.calibrator, self.router_feedback
        self.quotas = Quotas(
            config.quotas, self.ledger.tokens_on, self.pipeline.metrics.quota_refused
        )
        self._embedder: tuple[str, int] | None = None  # (model, dims), learnt on first use

    def warm_up(self) -> None:
        self.chunker.warm_up()

    async def shutdown(self) -> None:
        self.keys.close()
        self.ledger.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _dense_search(self, tenant: str, collection: str):
        """Search one collection by vector (the calibration's probe)."""

        async def search(vector: np.ndarray, k: int) -> list[tuple[str, float]]:
            try:
                found = await self.retrieval.search(
                    retrieval_pb2.SearchRequest(
                        tenant=tenant,
                        collection=collection,
                        query_vector=vector.tolist(),
                        top_k=k,
                        mode=retrieval_pb2.SEARCH_MODE_DENSE,
                    )
                )
            except Exception as exc:
                if isinstance(unwrap(exc), NotFound):
                    return []
                raise
            return [(h.chunk.chunk_id, h.score) for h in found.hits]

        return search

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
        check_text(request.question, "question", max_chars=self.config.limits.max_question_chars)
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
        return check_range(top_k, "top_k", 1, self.config.limits.max_top_k)

    async def _events(
        self, request: gateway_pb2.AnswerRequest, context: CallContext | None
    ) -> AsyncIterator[gateway_pb2.AnswerEvent]:
        timings = Timings()
        deadline = Deadline.start(
            request.latency_budget_ms, (context or CallContext()).get(TIMEOUT_HEADER)
        )
        with timings.stage("auth"):
            principal = self._principal(context)
        top_k = self._validate_answer(request)
        await self.quotas.admit(principal.tenant)
        async for event in self.pipeline.events(request, principal, top_k, timings, deadline):
            if event.HasField("done"):
                usage = event.done.usage
                self.quotas.spent(principal.tenant, usage.prompt_tokens + usage.completion_tokens)
            yield event

    # -- RPCs ------------------------------------------------------------------------------------

    @limited
    async def AnswerStream(
        self, request: gateway_pb2.AnswerRequest, context: CallContext | None = None
    ) -> AsyncIterator[gateway_pb2.AnswerEvent]:
        async for event in self._events(request, context):
            yield event

    @limited
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

    @limited
    async def Route(
        self, request: gateway_pb2.AnswerRequest, context: CallContext | None = None
    ) -> common_pb2.RouteDecision:
        principal = self._principal(context)
        top_k = self._validate_answer(request)
        await self.quotas.admit(principal.tenant)
        return await self.pipeline.route_only(request, principal, top_k)

    @limited
    async def Ingest(
        self, request: gateway_pb2.IngestRequest, context: CallContext | None = None
    ) -> gateway_pb2.IngestResponse:
        tenant = self._principal(context).tenant
        collection = check_name(request.collection or self.config.default_collection, "collection")
        docs = list(request.documents)
        self._validate_run(request)
        if not docs and not (request.ingest_id and request.final):
            raise InvalidArgument(
                "must contain at least one document (a run's final call may have none)",
                field="documents",
            )
        check_ingest_size(docs, self.config.limits)
        seen: set[str] = set()
        for i, doc in enumerate(docs):
            if not doc.doc_id or doc.doc_id in seen:
                raise InvalidArgument(
                    "must be non-empty and unique in the request", field=f"documents[{i}].doc_id"
                )
            seen.add(doc.doc_id)
            check_text(
                doc.text, f"documents[{i}].text", max_chars=self.config.limits.max_document_chars
            )
        if request.create_collection:
            await self._create_collection(tenant, collection, exist_ok=True)

        reply = gateway_pb2.IngestResponse(documents=len(docs))
        if docs:
            chunks = self._chunks(docs)
            reply.usage.embedding_tokens = await self._embed_chunks(chunks)
            written = await self.retrieval.upsert(
                retrieval_pb2.UpsertRequest(tenant=tenant, collection=collection, chunks=chunks),
            )
            reply.chunks, reply.seq = len(chunks), written.seq
            await self.calibrator.ingested(
                tenant, collection, [(c.chunk_id, c.doc_id, c.text) for c in chunks]
            )
        if request.ingest_id:
            run = await asyncio.to_thread(
                self.ingest_runs.add,
                tenant,
                collection,
                request.ingest_id,
                source=request.source,
                documents=reply.documents,
                chunks=reply.chunks,
                final=request.final,
            )
            reply.run.CopyFrom(_run_pb(run))
        return reply

    @staticmethod
    def _validate_run(request: gateway_pb2.IngestRequest) -> None:
        if request.ingest_id and not INGEST_ID.fullmatch(request.ingest_id):
            raise InvalidArgument(
                "must be 1-64 characters of letters, digits, '-', '_', '.' or ':'",
                field="ingest_id",
            )
        if (request.final or request.source) and not request.ingest_id:
            raise InvalidArgument("final and source need an ingest_id", field="ingest_id")
        if len(request.source) > 256:
            raise InvalidArgument("must be at most 256 characters", field="source")

    def _chunks(self, docs: list[gateway_pb2.Document]) -> list[retrieval_pb2.Chunk]:
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
        return chunks

    async def _embed_chunks(self, chunks: list[retrieval_pb2.Chunk]) -> int:
        """Fill in the chunks' vectors; returns the tokens embedded. A few batches are in
        flight at once, so the embedding service's batcher never waits on this loop between
        them (and one large ingest does not fill its queue)."""
        batch = self.config.embed_batch_size
        parts = [chunks[i : i + batch] for i in range(0, len(chunks), batch)]
        slots = asyncio.Semaphore(EMBED_BATCHES_IN_FLIGHT)

        async def embed(part: list[retrieval_pb2.Chunk]) -> embedding_pb2.EmbedResponse:
            async with slots:
                return await self._embed([c.text for c in part], embedding_pb2.INPUT_TYPE_PASSAGE)

        replies = await asyncio.gather(*(embed(part) for part in parts))
        for part, reply in zip(parts, replies, strict=True):
            for chunk, vector in zip(part, reply.vectors, strict=True):
                chunk.vector.extend(vector.values)
        return sum(sum(reply.token_counts) for reply in replies)

    async def _create_collection(
        self,
        tenant: str,
        name: str,
        *,
        exist_ok: bool,
        settings: gateway_pb2.GatewayCreateCollectionRequest | None = None,
    ) -> retrieval_pb2.CreateCollectionResponse:
        model, dims = await self._embedder_info()
        request = retrieval_pb2.CreateCollectionRequest(
            tenant=tenant, name=name, dims=dims, embedding_model=model, exist_ok=exist_ok
        )
        if settings is not None:
            request.index_type = settings.index_type
            request.metric = settings.metric
            request.lexical = settings.lexical
        return await self.retrieval.create_collection(request)

    @limited
    async def CreateCollection(
        self,
        request: gateway_pb2.GatewayCreateCollectionRequest,
        context: CallContext | None = None,
    ) -> retrieval_pb2.CreateCollectionResponse:
        tenant = self._principal(context).tenant
        name = check_name(request.name, "name")
        # index_type and metric are checked by the retrieval service, which knows its indexes.
        return await self._create_collection(tenant, name, exist_ok=False, settings=request)

    @limited
    async def DeleteCollection(
        self, request: gateway_pb2.GatewayCollectionRequest, context: CallContext | None = None
    ) -> retrieval_pb2.DeleteCollectionResponse:
        tenant = self._principal(context).tenant
        name = check_name(request.name, "name")
        reply = await self.retrieval.delete_collection(
            retrieval_pb2.DeleteCollectionRequest(tenant=tenant, name=name),
        )
        await asyncio.to_thread(self.ingest_runs.forget, tenant, name)
        await self.calibrator.forget(tenant, name)
        return reply

    @limited
    async def GetCollection(
        self, request: gateway_pb2.GatewayCollectionRequest, context: CallContext | None = None
    ) -> gateway_pb2.GetCollectionResponse:
        tenant = self._principal(context).tenant
        name = check_name(request.name, "name")
        listed = await self.retrieval.list_collections(
            retrieval_pb2.ListCollectionsRequest(tenant=tenant)
        )
        found = next((c for c in listed.collections if c.name == name), None)
        if found is None:
            raise NotFound(f"collection {name!r} not found")
        reply = gateway_pb2.GetCollectionResponse(collection=found)
        run = await asyncio.to_thread(self.ingest_runs.last, tenant, name)
        if run is not None:
            reply.last_ingest.CopyFrom(_run_pb(run))
        return reply

    @limited
    async def DeleteDocuments(
        self, request: gateway_pb2.DeleteDocumentsRequest, context: CallContext | None = None
    ) -> gateway_pb2.DeleteDocumentsResponse:
        tenant = self._principal(context).tenant
        collection = check_name(request.collection or self.config.default_collection, "collection")
        ids = list(request.doc_ids)
        if not ids:
            raise InvalidArgument("must name at least one document", field="doc_ids")
        for i, doc_id in enumerate(ids):
            if not doc_id:
                raise InvalidArgument("must not be empty", field=f"doc_ids[{i}]")
        deleted = await self.retrieval.delete(
            retrieval_pb2.DeleteRequest(tenant=tenant, collection=collection, doc_ids=ids)
        )
        await self.calibrator.documents_deleted(tenant, collection, ids)
        return gateway_pb2.DeleteDocumentsResponse(chunks=deleted.deleted, seq=deleted.seq)

    @limited
    async def Feedback(
        self, request: gateway_pb2.FeedbackRequest, context: CallContext | None = None
    ) -> gateway_pb2.FeedbackResponse:
        tenant = self._principal(context).tenant
        if not request.request_id:
            raise InvalidArgument("is required", field="request_id")
        check_range(request.rating, "rating", 1, 5)
        preferred = ""
        if request.preferred_path:
            if request.preferred_path not in (
                common_pb2.PATH_RAG,
                common_pb2.PATH_TUNED,
                common_pb2.PATH_HYBRID,
            ):
                raise InvalidArgument("must be RAG, TUNED or HYBRID", field="preferred_path")
            preferred = common_pb2.Path.Name(request.preferred_path).removeprefix("PATH_")
        path = await asyncio.to_thread(
            self.ledger.add_feedback, tenant, request.request_id, request.rating, request.comment
        )
        changed = await asyncio.to_thread(
            self.router_feedback.apply, tenant, request.request_id, request.rating, preferred
        )
        return gateway_pb2.FeedbackResponse(
            path=f"PATH_{path}",  # the enum value by name
            adjustments=[c.describe() for c in changed],
        )

    @limited
    async def Usage(
        self, request: gateway_pb2.UsageRequest, context: CallContext | None = None
    ) -> gateway_pb2.UsageResponse:
        tenant = self._principal(context).tenant
        since, until = day_range(
            request.since,
            request.until,
            today=dt.datetime.now(dt.UTC).date(),
            default_days=30,
            max_days=self.config.limits.max_usage_days,
        )
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
        quota = self.config.quotas.for_tenant(tenant)
        reply.quota.requests_per_minute = quota.requests_per_minute
        reply.quota.tokens_per_day = quota.tokens_per_day
        reply.quota.tokens_used_today = await self.quotas.used_today(tenant)
        return reply

    @limited
    async def ListCollections(
        self, request: gateway_pb2.GatewayListCollectionsRequest, context: CallContext | None = None
    ) -> retrieval_pb2.ListCollectionsResponse:
        tenant = self._principal(context).tenant
        return await self.retrieval.list_collections(
            retrieval_pb2.ListCollectionsRequest(tenant=tenant)
        )

    @limited
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

    @limited
    async def LoadAdapter(
        self, request: generation_pb2.LoadAdapterRequest, context: CallContext | None = None
    ) -> generation_pb2.LoadAdapterResponse:
        admin = self._admin(context)
        registered = generation_pb2.LoadAdapterRequest()
        registered.CopyFrom(request)
        registered.registered_by = admin.tenant  # who, from the key: never the caller's word
        try:
            return await self.generation.load_adapter(registered)
        finally:
            self.pipeline.adapters.invalidate()

    @limited
    async def UnloadAdapter(
        self, request: generation_pb2.UnloadAdapterRequest, context: CallContext | None = None
    ) -> generation_pb2.UnloadAdapterResponse:
        self._admin(context)
        try:
            return await self.generation.unload_adapter(request)
        finally:
            self.pipeline.adapters.invalidate()
