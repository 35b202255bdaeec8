"""The Rerank RPC as a plain class (no Serve decorator: ``app.py`` wraps it)."""

from __future__ import annotations

import numpy as np

from ragtune.common.batching import DynamicBatcher
from ragtune.common.errors import InvalidArgument, NotFound
from ragtune.common.fusion import reciprocal_rank_fusion
from ragtune.common.metrics import counter
from ragtune.common.telemetry import annotate
from ragtune.common.threads import set_torch_threads
from ragtune.common.validation import check_text, check_texts
from ragtune.rerank.backend import CrossEncoderScorer, MaxSimScorer, Scorer
from ragtune.rerank.config import RerankConfig
from ragtune.v1 import rerank_pb2 as pb


def make_scorer(config: RerankConfig) -> Scorer:
    common = {
        "name": config.model_name,
        "device": config.device,
        "batch_size": config.batch_size,
        "max_length": config.max_length,
    }
    if config.kind == "maxsim":
        return MaxSimScorer(config.model_path, **common)
    return CrossEncoderScorer(config.model_path, normalize=config.normalize, **common)


class RerankService:
    def __init__(self, config: RerankConfig, scorer: Scorer | None = None) -> None:
        self.config = config
        self.scorer = scorer or make_scorer(config)
        # Pairs from concurrent requests share forward passes.
        self.batcher: DynamicBatcher[tuple[str, str], float] = DynamicBatcher(
            self.scorer.score,
            max_batch_tokens=config.max_batch_tokens,
            max_wait_s=config.max_wait_ms / 1000,
        )
        self._truncated = counter(
            "ragtune_rerank_truncated_passages_total",
            "Passages longer than the cross-encoder's limit, scored on their start.",
            ("model",),
        )

    def warm_up(self) -> None:
        set_torch_threads(self.config.torch_threads)
        self.scorer.warm_up()

    async def Rerank(self, request: pb.RerankRequest) -> pb.RerankResponse:
        if request.model and request.model != self.scorer.name:
            raise NotFound(
                f"unknown rerank model {request.model!r}; this replica serves {self.scorer.name!r}"
            )
        check_text(request.query, "query", max_chars=self.config.max_text_chars)
        passages = check_texts(
            request.passages,
            "passages",
            max_count=self.config.max_passages,
            max_chars=self.config.max_text_chars,
        )
        if request.top_n < 0:
            raise InvalidArgument("must be >= 0", field="top_n")
        limit = self.scorer.max_length
        lengths = self.scorer.pair_tokens(request.query, passages)
        cut = [max(0, n - limit) for n in lengths]
        if any(cut):
            self._truncated.inc(sum(1 for c in cut if c), tags={"model": self.scorer.name})
        tokens = sum(min(n, limit) for n in lengths)
        scored, busy_s = await self.batcher.submit_timed(
            [(request.query, p) for p in passages], tokens
        )
        scores = np.asarray(scored)
        annotate(
            {
                "gen_ai.operation.name": "rerank",
                "gen_ai.request.model": self.scorer.name,
                "gen_ai.usage.input_tokens": tokens,
                "ragtune.rerank.passages": len(passages),
                "ragtune.rerank.truncated_passages": sum(1 for c in cut if c),
            }
        )
        order = np.argsort(-scores, kind="stable")
        kind = "probability" if self.config.normalize else "logit"
        if self.config.kind == "maxsim":
            kind = "maxsim"  # sum over query tokens of the best cosine: grows with the query
        if self.config.input_order_weight > 0:
            kind = "rrf"
            fused = reciprocal_rank_fusion(
                [range(len(passages)), order.tolist()], [self.config.input_order_weight, 1.0]
            )
            order = np.array(sorted(fused, key=lambda i: (-fused[i], i)))
            scores = np.array([fused[i] for i in range(len(passages))], dtype=np.float32)
        if request.top_n:
            order = order[: request.top_n]
        return pb.RerankResponse(
            results=[
                pb.RerankResult(index=int(i), score=float(scores[i]), truncated_tokens=cut[i])
                for i in order
            ],
            model=self.scorer.name,
            tokens=tokens,
            truncated_passages=sum(1 for c in cut if c),
            busy_ms=busy_s * 1000,
            score_kind=kind,
        )
