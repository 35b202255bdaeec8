"""The Embedding RPCs as a plain class (no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ragtune.common.errors import NotFound
from ragtune.common.validation import check_texts
from ragtune.embedding.backend import Embedder, SentenceTransformerEmbedder
from ragtune.embedding.config import EmbeddingConfig, EmbeddingModelConfig
from ragtune.v1 import embedding_pb2 as pb


class EmbeddingService:
    def __init__(
        self,
        config: EmbeddingConfig,
        embedder_factory: Callable[[EmbeddingModelConfig], Embedder] = SentenceTransformerEmbedder,
    ) -> None:
        self.config = config
        self._models = {m.name: (m, embedder_factory(m)) for m in config.models}
        # One model call at a time per replica: torch already uses every core for one batch.
        self._lock = asyncio.Lock()

    def warm_up(self) -> None:
        for _, embedder in self._models.values():
            embedder.warm_up()

    def check_health(self) -> None:
        for name, (_, embedder) in self._models.items():
            if embedder.dims <= 0:
                raise RuntimeError(f"embedding model {name} is not loaded")

    def model_info(self, name: str = "") -> tuple[str, int]:
        """(name, dims) of a model; the gateway sizes collections with it."""
        config, embedder = self._resolve(name)
        embedder.warm_up()
        return config.name, embedder.dims

    def _resolve(self, name: str) -> tuple[EmbeddingModelConfig, Embedder]:
        name = name or self.config.default_model
        if name not in self._models:
            raise NotFound(f"unknown embedding model {name!r}; known: {sorted(self._models)}")
        return self._models[name]

    async def Embed(self, request: pb.EmbedRequest) -> pb.EmbedResponse:
        config, embedder = self._resolve(request.model)
        texts = list(request.texts)
        check_texts(
            texts,
            "texts",
            max_count=self.config.max_batch_texts,
            max_chars=self.config.max_text_chars,
        )
        prefix = (
            config.query_prefix
            if request.input_type == pb.INPUT_TYPE_QUERY
            else config.passage_prefix
        )
        if prefix:
            texts = [prefix + t for t in texts]
        async with self._lock:
            result = await asyncio.to_thread(embedder.embed, texts)
        return pb.EmbedResponse(
            vectors=[pb.Vector(values=v.tolist()) for v in result.vectors],
            dims=int(result.vectors.shape[1]),
            model=config.name,
            token_counts=result.token_counts,
            truncated_tokens=result.truncated_tokens,
        )
