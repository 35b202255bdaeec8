"""The Embedding RPCs as a plain class (no Serve decorator: ``app.py`` wraps it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from ragtune.common.batching import DynamicBatcher
from ragtune.common.errors import NotFound
from ragtune.common.metrics import BATCH_BUCKETS, counter, gauge, histogram
from ragtune.common.telemetry import annotate
from ragtune.common.threads import set_torch_threads, threads_per_pass
from ragtune.common.validation import check_texts
from ragtune.embedding.backend import Embedder, SentenceTransformerEmbedder
from ragtune.embedding.config import EmbeddingConfig, EmbeddingModelConfig
from ragtune.v1 import embedding_pb2 as pb

# Small requests are tokenised inline; larger ones in a thread so the event loop keeps batching.
_INLINE_TOKENIZE_TEXTS = 8


class _Model:
    """One served model: its config, backend and batcher."""

    def __init__(self, config: EmbeddingModelConfig, embedder: Embedder, service: EmbeddingConfig):
        self.config = config
        self.embedder = embedder
        # One batch worker per forward pass that may run at once: on CPU one per core, each
        # batch on one thread, so a core never waits for another's share of a batch.
        self.batcher: DynamicBatcher[str, np.ndarray] = DynamicBatcher(
            embedder.embed_serial,
            max_batch_tokens=service.max_batch_tokens,
            max_wait_s=service.max_wait_ms / 1000,
            workers=embedder.parallel,
        )


class EmbeddingService:
    def __init__(
        self,
        config: EmbeddingConfig,
        embedder_factory: Callable[[EmbeddingModelConfig], Embedder] = SentenceTransformerEmbedder,
    ) -> None:
        self.config = config
        self._models = {m.name: _Model(m, embedder_factory(m), config) for m in config.models}
        tags = ("model",)
        self._truncated_inputs = counter(
            "ragtune_embedding_truncated_inputs_total",
            "Texts longer than the model's token limit, embedded truncated.",
            tags,
        )
        self._truncated_tokens = counter(
            "ragtune_embedding_truncated_tokens_total",
            "Tokens cut from texts longer than the model's limit.",
            tags,
        )
        self._batch_requests = histogram(
            "ragtune_embedding_batch_requests",
            "Requests served by one model call (dynamic batching).",
            tags,
            buckets=BATCH_BUCKETS,
        )
        self._queue_depth = gauge(
            "ragtune_embedding_queue_depth", "Requests waiting for a batch.", tags
        )
        for name, model in self._models.items():
            model.batcher.on_batch = lambda requests, _items, _wait, n=name: (
                self._batch_requests.observe(requests, tags={"model": n})
            )

    def report_gauges(self) -> None:
        for name, model in self._models.items():
            self._queue_depth.set(model.batcher.pending, tags={"model": name})

    def stats(self) -> dict[str, dict[str, int]]:
        """Per model: batches run, requests served, the largest batch (operators, benchmarks)."""
        return {name: asdict(model.batcher.stats) for name, model in self._models.items()}

    def warm_up(self) -> None:
        passes = max(m.embedder.parallel for m in self._models.values())
        set_torch_threads(self.config.torch_threads or threads_per_pass(passes))
        for model in self._models.values():
            model.embedder.warm_up()

    def check_health(self) -> None:
        for name, model in self._models.items():
            if model.embedder.dims <= 0:
                raise RuntimeError(f"embedding model {name} is not loaded")

    def _resolve(self, name: str) -> _Model:
        name = name or self.config.default_model
        if name not in self._models:
            raise NotFound(f"unknown embedding model {name!r}; known: {sorted(self._models)}")
        return self._models[name]

    async def Embed(self, request: pb.EmbedRequest) -> pb.EmbedResponse:
        model = self._resolve(request.model)
        texts = check_texts(
            request.texts,
            "texts",
            max_count=self.config.max_batch_texts,
            max_chars=self.config.max_text_chars,
        )
        prefix = (
            model.config.query_prefix
            if request.input_type == pb.INPUT_TYPE_QUERY
            else model.config.passage_prefix
        )
        if prefix:
            texts = [prefix + t for t in texts]
        embedder = model.embedder
        if len(texts) <= _INLINE_TOKENIZE_TEXTS:
            counts = embedder.count_tokens(texts)
        else:
            counts = await asyncio.to_thread(embedder.count_tokens, texts)
        limit = embedder.max_tokens
        truncated = [max(0, c - limit) for c in counts]
        if any(truncated):
            tags = {"model": model.config.name}
            self._truncated_inputs.inc(sum(1 for t in truncated if t), tags=tags)
            self._truncated_tokens.inc(sum(truncated), tags=tags)
        kept = [min(c, limit) for c in counts]
        tokens = sum(kept)
        vectors, busy_s = await model.batcher.submit_timed(texts, kept)
        annotate(
            {
                "gen_ai.operation.name": "embeddings",
                "gen_ai.request.model": model.config.name,
                "gen_ai.usage.input_tokens": tokens,
                "ragtune.embedding.texts": len(texts),
                "ragtune.embedding.truncated_tokens": sum(truncated),
            }
        )
        return pb.EmbedResponse(
            vectors=[pb.Vector(values=v.tolist()) for v in vectors],
            dims=embedder.dims,
            model=model.config.name,
            token_counts=counts,
            truncated_tokens=truncated,
            busy_ms=busy_s * 1000,
        )
