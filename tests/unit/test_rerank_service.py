import numpy as np
import pytest

from ragtune.common.errors import InvalidArgument, NotFound
from ragtune.rerank.config import RerankConfig
from ragtune.rerank.service import RerankService
from ragtune.v1 import rerank_pb2 as pb
from tests.conftest import run


class WordOverlapScorer:
    """Deterministic scorer: shared words with the query."""

    name = "overlap"

    def warm_up(self) -> None:
        pass

    def score(self, query, passages):
        q = set(query.lower().split())
        return np.array([len(q & set(p.lower().split())) for p in passages], dtype=np.float32), 0


def test_orders_passages_by_score_and_keeps_top_n():
    svc = RerankService(RerankConfig(model_path="unused"), scorer=WordOverlapScorer())
    reply = run(
        svc.Rerank(
            pb.RerankRequest(
                query="kestrel battery minutes",
                passages=["lyon office", "kestrel battery lasts 47 minutes", "kestrel drone"],
                top_n=2,
            )
        )
    )
    assert [r.index for r in reply.results] == [1, 2]
    assert reply.results[0].score > reply.results[1].score


def test_bad_input():
    svc = RerankService(
        RerankConfig(model_path="unused", max_passages=2), scorer=WordOverlapScorer()
    )
    for request, field in [
        (pb.RerankRequest(query="", passages=["a"]), "query"),
        (pb.RerankRequest(query="q", passages=[]), "passages"),
        (pb.RerankRequest(query="q", passages=["a", "b", "c"]), "passages"),
        (pb.RerankRequest(query="q", passages=["a", " "]), "passages[1]"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            run(svc.Rerank(request))
        assert err.value.field == field
    with pytest.raises(NotFound):
        run(svc.Rerank(pb.RerankRequest(query="q", passages=["a"], model="other")))


def test_cross_encoder_backend_scores_every_pair(cross_encoder_dir):
    svc = RerankService(RerankConfig(model_path=str(cross_encoder_dir)))
    svc.warm_up()
    reply = run(svc.Rerank(pb.RerankRequest(query="battery life", passages=["a", "b b", "c c c"])))
    assert sorted(r.index for r in reply.results) == [0, 1, 2]
    scores = [r.score for r in reply.results]
    assert scores == sorted(scores, reverse=True)
    assert reply.tokens > 0 and reply.model == cross_encoder_dir.name
