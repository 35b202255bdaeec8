import asyncio

import numpy as np
import pytest

from ragtune.common.errors import InvalidArgument, NotFound
from ragtune.rerank.config import RerankConfig
from ragtune.rerank.service import RerankService
from ragtune.v1 import rerank_pb2 as pb
from tests.conftest import run


class WordOverlapScorer:
    """Deterministic scorer: words shared with the query; one token per word, limit 8."""

    name = "overlap"
    max_length = 8

    def warm_up(self) -> None:
        pass

    def pair_tokens(self, query, passages):
        return [len(query.split()) + len(p.split()) for p in passages]

    def score(self, pairs):
        return np.array(
            [len(set(q.lower().split()) & set(p.lower().split())) for q, p in pairs],
            dtype=np.float32,
        )


def service(**config) -> RerankService:
    config.setdefault("input_order_weight", 0.0)  # the scorer's order alone
    return RerankService(RerankConfig(model_path="unused", **config), scorer=WordOverlapScorer())


def test_orders_passages_by_score_and_keeps_top_n():
    reply = run(
        service().Rerank(
            pb.RerankRequest(
                query="kestrel battery minutes",
                passages=["lyon office", "kestrel battery lasts 47 minutes", "kestrel drone"],
                top_n=2,
            )
        )
    )
    assert [r.index for r in reply.results] == [1, 2]
    assert reply.results[0].score > reply.results[1].score


def test_truncated_passages_are_reported_per_passage():
    reply = run(
        service().Rerank(
            pb.RerankRequest(query="battery life", passages=["short one", "w " * 20, "x " * 9])
        )
    )
    by_index = {r.index: r.truncated_tokens for r in reply.results}
    assert by_index == {0: 0, 1: 14, 2: 3}  # 2 query + n passage tokens, limit 8
    assert reply.truncated_passages == 2 and reply.tokens == 4 + 8 + 8


def test_concurrent_requests_are_batched_and_each_gets_its_own_scores():
    svc = service(max_wait_ms=20)

    async def many():
        return await asyncio.gather(
            *(
                svc.Rerank(pb.RerankRequest(query=f"word{i}", passages=["none", f"word{i} x"]))
                for i in range(12)
            )
        )

    replies = run(many())
    assert all(r.results[0].index == 1 and r.results[0].score == 1.0 for r in replies)
    assert svc.batcher.stats.batches < 12


def test_bad_input():
    svc = service(max_passages=2)
    for request, field in [
        (pb.RerankRequest(query="", passages=["a"]), "query"),
        (pb.RerankRequest(query="q", passages=[]), "passages"),
        (pb.RerankRequest(query="q", passages=["a", "b", "c"]), "passages"),
        (pb.RerankRequest(query="q", passages=["a", " "]), "passages[1]"),
        (pb.RerankRequest(query="q", passages=["a"], top_n=-1), "top_n"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            run(svc.Rerank(request))
        assert err.value.field == field
    with pytest.raises(NotFound):
        run(svc.Rerank(pb.RerankRequest(query="q", passages=["a"], model="other")))


def test_too_many_passages_are_refused_with_the_count_and_the_limit():
    with pytest.raises(InvalidArgument, match="has 3 texts; the limit per call is 2"):
        run(service(max_passages=2).Rerank(pb.RerankRequest(query="q", passages=["a", "b", "c"])))


def test_cross_encoder_backend_scores_reports_truncation_and_normalises(cross_encoder_dir):
    svc = RerankService(
        RerankConfig(kind="cross-encoder", model_path=str(cross_encoder_dir), max_length=16)
    )
    svc.warm_up()
    reply = run(
        svc.Rerank(pb.RerankRequest(query="battery life", passages=["a", "b b", "word " * 40]))
    )
    assert sorted(r.index for r in reply.results) == [0, 1, 2]
    scores = [r.score for r in reply.results]
    assert scores == sorted(scores, reverse=True)
    assert reply.truncated_passages == 1 and reply.model == cross_encoder_dir.name
    assert next(r for r in reply.results if r.index == 2).truncated_tokens == 2 + 2 + 40 + 1 - 16
    normalised = RerankService(
        RerankConfig(kind="cross-encoder", model_path=str(cross_encoder_dir), normalize=True)
    )
    reply = run(normalised.Rerank(pb.RerankRequest(query="q", passages=["a", "b"])))
    assert all(0 < r.score < 1 for r in reply.results)


def test_maxsim_reranker_prefers_the_passage_that_answers():
    svc = RerankService(RerankConfig(kind="maxsim", input_order_weight=0.0))
    svc.warm_up()
    reply = run(
        svc.Rerank(
            pb.RerankRequest(
                query="How long does the Kestrel drone battery last?",
                passages=[
                    "The Lyon office opened in March 2026.",
                    "The Kestrel battery lasts 47 minutes on one charge.",
                    "word " * 300,
                ],
            )
        )
    )
    assert reply.results[0].index == 1 and reply.model == "maxsim-all-MiniLM-L6-v2"
    assert -1 <= reply.results[-1].score <= reply.results[0].score <= 1
    long_one = next(r for r in reply.results if r.index == 2)
    assert long_one.truncated_tokens == 302 - 256 and reply.truncated_passages == 1


def test_a_cross_encoder_needs_a_model_path():
    with pytest.raises(ValueError, match="model_path"):
        RerankConfig(kind="cross-encoder")


def test_fusion_with_the_incoming_order_keeps_strong_first_stage_hits_up():
    # The scorer likes passage 2 best; the first stage put passage 0 first.
    passages = ["alpha", "beta", "alpha beta gamma"]
    alone = run(service().Rerank(pb.RerankRequest(query="alpha beta gamma", passages=passages)))
    fused = run(
        service(input_order_weight=2.0).Rerank(
            pb.RerankRequest(query="alpha beta gamma", passages=passages)
        )
    )
    assert [r.index for r in alone.results][0] == 2
    assert [r.index for r in fused.results][0] == 0  # 2/(60+1) + 1/(60+2) beats 2/63 + 1/61
    assert fused.results[0].score == pytest.approx(2 / 61 + 1 / 62)
