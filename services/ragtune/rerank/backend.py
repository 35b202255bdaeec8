"""Cross-encoder backend for the rerank service."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np


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


class CrossEncoderScorer:
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
        self.path = path
        self.name = name or os.path.basename(os.path.normpath(path))
        self.device = device
        self.batch_size = batch_size
        self._max_length = max_length
        self.normalize = normalize
        self._model = None

    def warm_up(self) -> None:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(self.path, device=self.device, max_length=self._max_length)
            # Not thread-safe: counting (event loop) and scoring (worker thread) use separate copies.
            self._counter = copy.deepcopy(self._model.tokenizer)

    @property
    def max_length(self) -> int:
        self.warm_up()
        return int(self._model.max_length)

    def pair_tokens(self, query: str, passages: Sequence[str]) -> list[int]:
        self.warm_up()
        encoded = self._counter([query] * len(passages), list(passages), truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        import torch

        self.warm_up()
        scores = self._model.predict(
            list(pairs),
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            activation_fn=torch.nn.Sigmoid() if self.normalize else torch.nn.Identity(),
        )
        return np.asarray(scores, dtype=np.float32).reshape(-1)
