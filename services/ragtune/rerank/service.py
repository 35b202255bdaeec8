"""The Rerank RPC as a plain class (no Ray)."""

from __future__ import annotations

import asyncio

import numpy as np

from ragtune.common.errors import InvalidArgument, NotFound
from ragtune.common.validation import check_text, check_texts
from ragtune.rerank.backend import CrossEncoderScorer, Scorer
from ragtune.rerank.config import RerankConfig
from ragtune.v1 import rerank_pb2 as pb


class RerankService:
    def __init__(self, config: RerankConfig, scorer: Scorer | None = None) -> None:
        self.config = config
        self.scorer = scorer or CrossEncoderScorer(
            config.model_path,
            name=config.model_name,
            device=config.device,
            batch_size=config.batch_size,
        )
        self._lock = asyncio.Lock()

    def warm_up(self) -> None:
        self.scorer.warm_up()

    async def Rerank(self, request: pb.RerankRequest) -> pb.RerankResponse:
        if request.model and request.model != self.scorer.name:
            raise NotFound(
                f"unknown rerank model {request.model!r}; this replica serves {self.scorer.name!r}"
            )
        check_text(request.query, "query", max_chars=self.config.max_text_chars)
        passages = list(request.passages)
        check_texts(
            passages,
            "passages",
            max_count=self.config.max_passages,
            max_chars=self.config.max_text_chars,
        )
        if request.top_n < 0:
            raise InvalidArgument("must be >= 0", field="top_n")
        async with self._lock:
            scores, tokens = await asyncio.to_thread(self.scorer.score, request.query, passages)
        order = np.argsort(-scores, kind="stable")
        if request.top_n:
            order = order[: request.top_n]
        return pb.RerankResponse(
            results=[pb.RerankResult(index=int(i), score=float(scores[i])) for i in order],
            model=self.scorer.name,
            tokens=tokens,
        )
