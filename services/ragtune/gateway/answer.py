"""One answer, end to end: first-stage retrieval (the router's probe), the route decision,
reranking, generation, the cost, and the ledger row.

The probe and the first retrieval stage are the same search: when the router picks a retrieving
path the probe's hits are the candidates, so probing costs extra only on the TUNED path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ragtune.common.auth import Principal
from ragtune.common.cost import StageUse, price
from ragtune.common.errors import DeadlineExceeded, NotFound, outcome, unwrap
from ragtune.common.telemetry import annotate, tracer
from ragtune.gateway.calibration import Calibrator
from ragtune.gateway.config import STRUCTURED_FORMATS, GatewayConfig
from ragtune.gateway.cues import CueIndex, apply_cues, example_texts, question_parts
from ragtune.gateway.deadline import Deadline
from ragtune.gateway.feedback import Decision, RouterFeedback
from ragtune.gateway.ledger import Entry, Ledger
from ragtune.gateway.metrics import GatewayMetrics
from ragtune.gateway.routing import AdapterCard, Evidence, Route, RouteRequest, RoutingPolicy
from ragtune.v1 import (
    common_pb2,
    embedding_pb2,
    gateway_pb2,
    generation_pb2,
    rerank_pb2,
    retrieval_pb2,
)
from ragtune.v1.clients import EmbeddingClient, GenerationClient, RerankClient, RetrievalClient


class Timings:
    """Collects StageTiming entries in the order stages run."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stages: list[common_pb2.StageTiming] = []
        self.current = ""  # the stage running now (named in deadline errors)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self.current = name
        try:
            yield
        finally:
            self.stages.append(
                common_pb2.StageTiming(stage=name, ms=(time.perf_counter() - start) * 1000)
            )

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000

    def done(self) -> list[common_pb2.StageTiming]:
        return [*self.stages, common_pb2.StageTiming(stage="total", ms=self.elapsed_ms())]


async def close_stream(stream: Any) -> None:
    """End a service stream early: an async generator (in-process) is closed, a Serve
    streaming response cancelled; either way the callee's generator is closed and its engine
    aborts the request."""
    if hasattr(stream, "aclose"):
        await stream.aclose()
    elif hasattr(stream, "cancel"):
        stream.cancel()


@dataclass
class Work:
    """What one request has used so far: tokens and busy time per stage, for usage and cost."""

    usage: common_pb2.Usage = field(default_factory=common_pb2.Usage)
    uses: list[StageUse] = field(default_factory=list)

    def add(self, stage: str, busy_ms: float, tokens: int) -> None:
        """Busy time and tokens of a stage; one entry per stage (the probe's searches and
        the cue's topic searches are one ``retrieve``)."""
        for n, use in enumerate(self.uses):
            if use.stage == stage:
                self.uses[n] = StageUse(stage, use.busy_ms + busy_ms, use.tokens + tokens)
                return
        self.uses.append(StageUse(stage, busy_ms, tokens))


def search_score_kind(found: retrieval_pb2.SearchResponse) -> str:
    """Citation.score_kind of a search's hits."""
    if found.mode == retrieval_pb2.SEARCH_MODE_HYBRID:
        return "rrf"
    if found.mode == retrieval_pb2.SEARCH_MODE_LEXICAL:
        return "bm25"
    return "l2" if found.metric == "l2" else "cosine"


@dataclass
class FirstStage:
    hits: list[tuple[retrieval_pb2.Chunk, float]]
    exists: bool
    ms: float
    score_kind: str = "cosine"  # what the hits' scores are (Citation.score_kind)
    # The dense ranking's scores when the hits' are fused (hybrid search): the router's probe
    # is calibrated on the dense scale, so it judges these.
    dense_scores: list[float] = field(default_factory=list)
    # The question's vector, then its parts' (for semantic cues), from the one embedding call.
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    def evidence(self, top_k: int) -> Evidence:
        scores = self.dense_scores[:top_k] or [score for _, score in self.hits[:top_k]]
        if not self.exists or not scores:
            return Evidence(self.exists, ms=self.ms)
        rest = scores[1:]
        margin = scores[0] - sum(rest) / len(rest) if rest else 0.0
        return Evidence(True, scores[0], margin, len(scores), self.ms)


def _vectors(reply: embedding_pb2.EmbedResponse) -> np.ndarray:
    return np.asarray([v.values for v in reply.vectors], dtype=np.float32)


class AdapterCatalog:
    """The generation service's adapter listing, reused for ``ttl_s``."""

    def __init__(self, generation: GenerationClient, ttl_s: float) -> None:
        self.generation, self.ttl_s = generation, ttl_s
        self._cards: dict[str, AdapterCard] = {}
        self._fetched = -float("inf")
        self.base_model = ""

    async def cards(self) -> dict[str, AdapterCard]:
        if time.monotonic() - self._fetched > self.ttl_s:
            reply = await self.generation.list_adapters(generation_pb2.ListAdaptersRequest())
            self.base_model = reply.base_model
            self._cards = {
                a.name: AdapterCard(
                    a.name,
                    tuple(a.tasks),
                    a.output_format,
                    a.tone,
                    tuple(a.examples),
                    tuple(a.counter_examples),
                )
                for a in reply.adapters
            }
            self._fetched = time.monotonic()
        return self._cards

    def invalidate(self) -> None:
        """Read the listing again on next use: this replica just loaded or unloaded one (other
        gateway replicas see it within ``ttl_s``)."""
        self._fetched = -float("inf")


class AnswerPipeline:
    def __init__(
        self,
        config: GatewayConfig,
        policy: RoutingPolicy,
        ledger: Ledger,
        *,
        embedding: EmbeddingClient,
        retrieval: RetrievalClient,
        generation: GenerationClient,
        rerank: RerankClient | None,
    ) -> None:
        self.config, self.policy, self.ledger = config, policy, ledger
        self.embedding, self.retrieval, self.generation = embedding, retrieval, generation
        self.rerank = rerank
        self.adapters = AdapterCatalog(generation, config.router.adapter_cache_s)
        self.metrics = GatewayMetrics()
        self.calibrator: Calibrator | None = None  # set by the gateway service
        self.feedback: RouterFeedback | None = None
        self._cue_index: tuple[dict[str, AdapterCard], CueIndex] | None = None

    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Query vectors of ``texts`` (unit length), in one embedding call."""
        reply = await self.embedding.embed(
            embedding_pb2.EmbedRequest(texts=texts, input_type=embedding_pb2.INPUT_TYPE_QUERY)
        )
        return _vectors(reply)

    async def cue_index(self, cards: dict[str, AdapterCard]) -> CueIndex:
        """The adapters' example vectors, embedded again only when the listing changes (the
        catalog hands out the same dict until it reads the listing again)."""
        held = self._cue_index
        if held is None or (held[0] is not cards and held[0] != cards):
            texts = example_texts(cards.values())
            vectors = dict(zip(texts, await self.embed_texts(texts), strict=True)) if texts else {}
            held = self._cue_index = (cards, CueIndex(list(cards.values()), vectors))
        return held[1]

    def _wants_cues(self, route_request: RouteRequest) -> bool:
        return (
            self.config.router.semantic_cues.enabled
            and route_request.path == common_pb2.PATH_AUTO
            and not route_request.adapter
            and not route_request.need.explicit
            and any(c.examples for c in route_request.usable)
        )

    # -- stages ----------------------------------------------------------------------------------

    async def _first_stage(
        self,
        request: gateway_pb2.AnswerRequest,
        tenant: str,
        collection: str,
        k: int,
        timings: Timings,
        work: Work,
        parts: list[str] | None = None,
        choose: Callable[[np.ndarray], Awaitable[np.ndarray]] | None = None,
    ) -> FirstStage:
        """The probe's search; ``parts`` of the question are embedded in the same call (for
        the semantic cues), and ``choose`` picks the vector searched from all of them."""
        started = time.perf_counter()
        with timings.stage("embed"):
            query = await self.embedding.embed(
                embedding_pb2.EmbedRequest(
                    texts=[request.question, *(parts or [])],
                    input_type=embedding_pb2.INPUT_TYPE_QUERY,
                ),
            )
        vectors = _vectors(query)
        work.usage.embedding_tokens = sum(query.token_counts)
        work.add("embed", query.busy_ms, work.usage.embedding_tokens)
        search = retrieval_pb2.SearchRequest(
            tenant=tenant,
            collection=collection,
            query_vector=(await choose(vectors) if choose else vectors[0]).tolist(),
            query_text=request.question,
            top_k=k,
            filter=dict(request.filter),
            mode=retrieval_pb2.SEARCH_MODE_AUTO,  # hybrid where the collection is lexical
        )
        with timings.stage("retrieve"):
            found = await self._search(search)
        if found is None:
            elapsed = (time.perf_counter() - started) * 1000
            return FirstStage([], False, elapsed, vectors=vectors)
        work.add("retrieve", found.busy_ms, 0)
        hits = [(h.chunk, h.score) for h in found.hits]
        return FirstStage(
            hits,
            True,
            (time.perf_counter() - started) * 1000,
            score_kind=search_score_kind(found),
            dense_scores=list(found.dense_scores),
            vectors=vectors,
        )

    async def _search(
        self, search: retrieval_pb2.SearchRequest
    ) -> retrieval_pb2.SearchResponse | None:
        """``search`` on the retrieval service; None when the collection does not exist."""
        try:
            return await self.retrieval.search(search)
        except Exception as exc:
            if not isinstance(unwrap(exc), NotFound):
                raise
            return None

    async def _best_score(
        self, tenant: str, collection: str, vector: np.ndarray, filters: dict, work: Work
    ) -> float | None:
        """The collection's best dense score for ``vector`` (None: no such collection)."""
        found = await self._search(
            retrieval_pb2.SearchRequest(
                tenant=tenant,
                collection=collection,
                query_vector=vector.tolist(),
                top_k=1,
                filter=filters,
                mode=retrieval_pb2.SEARCH_MODE_DENSE,
            )
        )
        if found is None:
            return None
        work.add("retrieve", found.busy_ms, 0)
        return found.hits[0].score if found.hits else None

    async def _passages(
        self,
        question: str,
        first: FirstStage,
        top_k: int,
        timings: Timings,
        work: Work,
    ) -> list[tuple[common_pb2.Citation, str]]:
        """Citations for the passages given to the model, each with the passage's full text."""
        hits, score_kind = first.hits, first.score_kind
        if self.rerank is not None and hits:
            hits = hits[: max(top_k, self.config.rerank_candidates)]
            with timings.stage("rerank"):
                ranked = await self.rerank.rerank(
                    rerank_pb2.RerankRequest(
                        query=question, passages=[c.text for c, _ in hits], top_n=top_k
                    ),
                )
            work.usage.rerank_tokens = ranked.tokens
            work.add("rerank", ranked.busy_ms, ranked.tokens)
            hits = [(hits[r.index][0], r.score) for r in ranked.results]
            kind = ranked.score_kind or "logit"
            score_kind = "rrf" if kind == "rrf" else f"rerank-{kind}"
        return [
            (
                common_pb2.Citation(
                    marker=i,
                    doc_id=chunk.doc_id,
                    chunk_id=chunk.chunk_id,
                    score=score,
                    snippet=chunk.text[: self.config.snippet_chars],
                    metadata=chunk.metadata,
                    score_kind=score_kind,
                ),
                chunk.text,
            )
            for i, (chunk, score) in enumerate(hits[:top_k], start=1)
        ]

    async def _decide(
        self,
        request: gateway_pb2.AnswerRequest,
        principal: Principal,
        top_k: int,
        timings: Timings,
        work: Work,
        count: bool = True,
    ) -> tuple[Route, FirstStage | None]:
        collection = request.collection or self.config.default_collection
        need = self.policy.read_need(
            request.question, request.output_format, request.task, request.tone
        )
        route_request = RouteRequest(
            question=request.question,
            path=request.path,
            adapter=request.adapter,
            collection=collection,
            collection_named=bool(request.collection),
            need=need,
            require_citations=request.require_citations,
            freshness_sensitive=request.freshness_sensitive,
            latency_budget_ms=request.latency_budget_ms,
            max_cost_micro_usd=request.max_cost_micro_usd,
            registered=await self.adapters.cards(),
            allowed=principal.adapters,
        )
        first = None
        probe_k = self.config.router.probe.top_k
        cues = self._wants_cues(route_request)
        parts = question_parts(request.question) if cues else []
        offsets = await self.feedback.cached_offsets(principal.tenant) if self.feedback else {}
        index = await self.cue_index(route_request.registered) if cues else None
        adapter_offsets = {name: v for (scope, name), v in offsets.items() if scope == "adapter"}
        filters = dict(request.filter)

        async def with_cues(vectors: np.ndarray) -> np.ndarray:
            """Match the cues; the probe searches the question without a matched instruction."""
            nonlocal route_request
            if index is None:
                return vectors[0]

            async def topic(parts: list[int]) -> list[float | None]:
                """Each part's best dense score in the collection, searched at once."""
                with timings.stage("cue_search"):
                    return list(
                        await asyncio.gather(
                            *(
                                self._best_score(
                                    principal.tenant, collection, vectors[n], filters, work
                                )
                                for n in parts
                            )
                        )
                    )

            route_request, vector = await apply_cues(
                self.policy,
                route_request,
                index,
                vectors,
                adapter_offsets,
                topic if self.policy.wants_evidence(route_request) else None,
            )
            return vector

        if self.policy.wants_evidence(route_request):
            depth = max(top_k, self.config.rerank_candidates if self.rerank else 0, probe_k)
            first = await self._first_stage(
                request, principal.tenant, collection, depth, timings, work, parts, with_cues
            )
        elif cues:  # the probe is off: the cues still need the question embedded
            with timings.stage("embed"):
                vectors = await self.embed_texts([request.question, *parts])
            await with_cues(vectors)
        evidence = first.evidence(probe_k) if first else None
        if evidence is not None and evidence.collection_exists:
            fitted = (
                await self.calibrator.get(principal.tenant, collection) if self.calibrator else None
            )
            evidence = replace(
                evidence,
                threshold=fitted.threshold if fitted else None,
                slope=fitted.slope if fitted else 0.0,
                offset=offsets.get(("collection", collection), 0.0),
            )
        with timings.stage("route"), tracer().start_as_current_span("route decision"):
            route = self.policy.decide(route_request, evidence)
            decision = {
                "ragtune.route.path": route.path_name,
                "ragtune.route.reason": ",".join(route.reasons),
                "ragtune.route.confidence": route.confidence,
                "ragtune.adapter": route.adapter,
            }
            annotate(decision)
        annotate(decision)  # on the gateway's RPC span too
        if count:
            self.metrics.decided(route.path_name, route.reasons)
        return route, first

    async def route_only(
        self, request: gateway_pb2.AnswerRequest, principal: Principal, top_k: int
    ) -> common_pb2.RouteDecision:
        """The decision Answer would make, without answering (``Route``): not counted in the
        decision metrics, not written to the ledger."""
        route, _ = await self._decide(request, principal, top_k, Timings(), Work(), count=False)
        return route.to_pb()

    # -- the request -----------------------------------------------------------------------------

    async def events(
        self,
        request: gateway_pb2.AnswerRequest,
        principal: Principal,
        top_k: int,
        timings: Timings,
        deadline: Deadline | None = None,
    ) -> AsyncIterator[gateway_pb2.AnswerEvent]:
        if self.config.telemetry.tenant_attribute:
            annotate({"ragtune.tenant": principal.tenant})
        path = "none"
        try:
            async for event in self._events(
                request, principal, top_k, timings, deadline or Deadline(None)
            ):
                if event.HasField("route"):
                    path = common_pb2.Path.Name(event.route.path).removeprefix("PATH_")
                yield event
        except BaseException as exc:
            self.metrics.ended(path, outcome(exc))
            raise
        self.metrics.ended(path, "ok")

    async def _events(
        self,
        request: gateway_pb2.AnswerRequest,
        principal: Principal,
        top_k: int,
        timings: Timings,
        deadline: Deadline,
    ) -> AsyncIterator[gateway_pb2.AnswerEvent]:
        work = Work()
        try:
            async for event in self._stages(request, principal, top_k, timings, deadline, work):
                yield event
        except TimeoutError:
            if deadline.at is None:
                raise
            # asyncio.timeout ended a stage in flight (generation: closing its stream aborted it
            # in the engine): the client's budget is spent, not a server fault.
            self.metrics.deadline_exceeded(timings.current or "generate")
            raise DeadlineExceeded(
                f"the {deadline.budget_ms:g} ms budget ended during the "
                f"{timings.current or 'generate'} stage; its work was stopped"
            ) from None
        except DeadlineExceeded:
            self.metrics.deadline_exceeded(timings.current or "route")
            raise

    async def _stages(
        self,
        request: gateway_pb2.AnswerRequest,
        principal: Principal,
        top_k: int,
        timings: Timings,
        deadline: Deadline,
        work: Work,
    ) -> AsyncIterator[gateway_pb2.AnswerEvent]:
        # The route decision runs whatever the budget: it is short, and it is what refuses a
        # budget no path can meet (FAILED_PRECONDITION) before any work is spent.
        route, first = await self._decide(request, principal, top_k, timings, work)
        yield gateway_pb2.AnswerEvent(route=route.to_pb())

        passages: list[tuple[common_pb2.Citation, str]] = []
        if route.retrieves:
            deadline.check("rerank" if self.rerank is not None else "retrieve")
            if first is None:  # the probe is off
                first = await self._first_stage(
                    request,
                    principal.tenant,
                    route.collection,
                    max(top_k, self.config.rerank_candidates if self.rerank else 0),
                    timings,
                    work,
                )
                if not first.exists:
                    raise NotFound(f"collection {route.collection!r} not found")
            async with asyncio.timeout(deadline.remaining_s()):
                passages = await self._passages(request.question, first, top_k, timings, work)
        sampling = common_pb2.SamplingParams()
        sampling.CopyFrom(request.sampling)
        card = (await self.adapters.cards()).get(route.adapter) if route.adapter else None
        structured = card is not None and card.output_format in STRUCTURED_FORMATS
        if not sampling.max_tokens:
            # A structured reply cut mid-object is no reply: its adapter gets a budget that fits.
            budget = self.config.structured_max_tokens if structured else 0
            sampling.max_tokens = budget or self.config.default_max_tokens
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
        deadline.check("generate")
        with timings.stage("generate"):
            stream = self.generation.generate_stream(generate, model_id=route.adapter)
            pieces = aiter(stream)
            try:
                while True:
                    # Per piece, not around the loop: a timeout scope must not span a yield.
                    try:
                        piece = await asyncio.wait_for(anext(pieces), deadline.remaining_s())
                    except StopAsyncIteration:
                        break
                    if piece.delta:
                        yield gateway_pb2.AnswerEvent(delta=piece.delta)
                    if piece.finish_reason:
                        finish = piece.finish_reason
                        work.usage.prompt_tokens = piece.prompt_tokens
                        work.usage.completion_tokens = piece.completion_tokens
                        work.add(
                            "generate",
                            piece.busy_ms,
                            piece.prompt_tokens + piece.completion_tokens,
                        )
            finally:
                await close_stream(stream)  # stops the engine's work if we leave early
        done = gateway_pb2.AnswerResponse(
            model=self.adapters.base_model,
            route=route.to_pb(),
            citations=[c for c, _ in passages],
            usage=work.usage,
            finish_reason=finish,
            request_id=uuid.uuid4().hex,
            cost=price(
                self.config.pricing,
                work.uses,
                prompt_tokens=work.usage.prompt_tokens,
                completion_tokens=work.usage.completion_tokens,
            ),
        )
        done.timings.extend(timings.done())
        probed = ""
        if request.path == common_pb2.PATH_AUTO and first is not None and first.exists:
            probed = request.collection or self.config.default_collection
        await self._account(done, principal.tenant, timings.elapsed_ms(), probed)
        yield gateway_pb2.AnswerEvent(done=done)

    def _record(self, entry: Entry, decision: Decision | None) -> None:
        """The ledger row and what feedback on it may adjust (one trip to a worker thread)."""
        self.ledger.record(entry)
        if decision is not None and self.feedback is not None:
            self.feedback.remember(decision)

    async def _account(
        self, done: gateway_pb2.AnswerResponse, tenant: str, ms: float, probed: str = ""
    ) -> None:
        """Ledger row, path statistics, cost counters: before the client sees the cost.
        ``probed``: the collection the router's probe searched (what feedback can adjust)."""
        route, cost = done.route, done.cost
        path = common_pb2.Path.Name(route.path).removeprefix("PATH_")
        entry = Entry(
            request_id=done.request_id,
            tenant=tenant,
            path=path,
            adapter=route.adapter,
            collection=route.collection,
            reasons=tuple(route.reasons),
            confidence=route.confidence,
            latency_ms=ms,
            cost_micro_usd=cost.total_micro_usd,
            stage_costs={s.stage: s.micro_usd for s in cost.stages},
            prompt_tokens=done.usage.prompt_tokens,
            completion_tokens=done.usage.completion_tokens,
            finish_reason=done.finish_reason,
            created=dt.datetime.now(dt.UTC),
        )
        decision = None
        learns = self.feedback is not None and self.config.router.feedback.enabled
        if learns and (probed or "similar_request" in route.reasons):
            decision = Decision(
                done.request_id,
                tenant,
                path,
                probed,
                bool({"corpus_can_answer", "corpus_cannot_answer"} & set(route.reasons)),
                route.adapter if "similar_request" in route.reasons else "",
            )
        await asyncio.to_thread(self._record, entry, decision)
        self.policy.observe(path, ms, cost.total_micro_usd)
        self.metrics.answered(done, path, ms)
        annotate(
            {"ragtune.cost.usd": cost.total_micro_usd / 1e6, "ragtune.request_id": done.request_id}
        )
