"""Cross-encoder backend for the rerank service."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ragtune.common.lazy import LazyModel, require
from ragtune.common.models import default_minilm_path


class Scorer(Protocol):
    name: str

    def warm_up(self) -> None: ...

    def pair_tokens(self, query: str, passages: Sequence[str]) -> list[int]:
        """Tokens of each (query, passage) pair before truncation."""
        ...

    @property
    def max_length(self) -> int: ...

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Relevance of each pair (pairs longer than max_length are truncated)."""
        ...


class CrossEncoderScorer(LazyModel):
    def __init__(
        self,
        path: str,
        *,
        name: str = "",
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int | None = None,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.path = path
        self.name = name or os.path.basename(os.path.normpath(path))
        self.device = device
        self.batch_size = batch_size
        self._max_length = max_length
        self.normalize = normalize

    def _load(self):
        st = require("sentence_transformers", "sentence-transformers", "the cross-encoder reranker")
        model = st.CrossEncoder(self.path, device=self.device, max_length=self._max_length)
        # Not thread-safe: counting (event loop) and scoring (worker thread) use separate copies.
        self._counter = copy.deepcopy(model.tokenizer)
        return model

    @property
    def max_length(self) -> int:
        return int(self.model.max_length)

    def pair_tokens(self, query: str, passages: Sequence[str]) -> list[int]:
        self.warm_up()
        encoded = self._counter([query] * len(passages), list(passages), truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        import torch

        scores = self.model.predict(
            list(pairs),
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            activation_fn=torch.nn.Sigmoid() if self.normalize else torch.nn.Identity(),
        )
        return np.asarray(scores, dtype=np.float32).reshape(-1)


class MaxSimScorer(LazyModel):
    """Late interaction (ColBERT-style MaxSim) over a bi-encoder's token embeddings.

    Query and passage are encoded separately into L2-normalised token vectors ([CLS], [SEP]
    and padding dropped); a passage scores the mean, over query tokens, of each token's best
    cosine match among the passage's tokens. With the shipped all-MiniLM-L6-v2 weights this is
    the offline default reranker: no pretrained cross-encoder can be downloaded here, and
    token-level matching adds precision that single-vector retrieval averages away.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        name: str = "",
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        if path is None:
            path, default_name = default_minilm_path(), "maxsim-all-MiniLM-L6-v2"
        else:
            default_name = f"maxsim-{os.path.basename(os.path.normpath(path))}"
        self.path = path
        self.name = name or default_name
        self.device = device
        self.batch_size = batch_size
        self._max_length = max_length

    def _load(self):
        st = require("sentence_transformers", "sentence-transformers", "the MaxSim reranker")
        model = st.SentenceTransformer(self.path, device=self.device)
        if self._max_length:
            model.max_seq_length = self._max_length
        tokenizer = model.tokenizer
        self._skip = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
        self._counter = copy.deepcopy(tokenizer)  # see CrossEncoderScorer
        return model

    @property
    def max_length(self) -> int:
        return int(self.model.max_seq_length)

    def pair_tokens(self, query: str, passages: Sequence[str]) -> list[int]:
        """Passages are encoded on their own, so only the passage's length is truncated."""
        self.warm_up()
        return [len(ids) for ids in self._counter(list(passages), truncation=False)["input_ids"]]

    def _token_vectors(self, texts: list[str]) -> list[np.ndarray]:
        import torch

        outputs = self._model.encode(
            texts, batch_size=self.batch_size, output_value=None, show_progress_bar=False
        )
        vectors = []
        for out in outputs:
            ids, mask = out["input_ids"], out["attention_mask"]
            keep = (mask == 1) & ~torch.isin(ids, torch.tensor(sorted(self._skip)))
            tokens = torch.nn.functional.normalize(out["token_embeddings"][keep].float(), dim=-1)
            vectors.append(tokens.cpu().numpy())
        return vectors

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        self.warm_up()
        queries = sorted({q for q, _ in pairs})
        query_vectors = dict(zip(queries, self._token_vectors(queries), strict=True))
        passage_vectors = self._token_vectors([p for _, p in pairs])
        return np.array(
            [
                float((query_vectors[q] @ d.T).max(axis=1).mean()) if len(d) else 0.0
                for (q, _), d in zip(pairs, passage_vectors, strict=True)
            ],
            dtype=np.float32,
        )
