"""Cross-encoder backend for the rerank service."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Scorer(Protocol):
    name: str

    def warm_up(self) -> None: ...

    def score(self, query: str, passages: Sequence[str]) -> tuple[np.ndarray, int]:
        """Relevance of each passage and the number of tokens scored."""
        ...


class CrossEncoderScorer:
    def __init__(self, path: str, *, name: str = "", device: str = "cpu", batch_size: int = 32):
        self.path = path
        self.name = name or os.path.basename(os.path.normpath(path))
        self.device = device
        self.batch_size = batch_size
        self._model = None

    def warm_up(self) -> None:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(self.path, device=self.device)

    def score(self, query: str, passages: Sequence[str]) -> tuple[np.ndarray, int]:
        self.warm_up()
        pairs = [(query, p) for p in passages]
        tokenizer = self._model.tokenizer
        tokens = sum(len(ids) for ids in tokenizer(list(pairs), truncation=True)["input_ids"])
        scores = self._model.predict(
            pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(scores, dtype=np.float32).reshape(-1), tokens
