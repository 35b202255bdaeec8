"""The gateway class over in-process services (no Ray): routing, stages, auth, ingest."""

from __future__ import annotations

import pytest

from ragtune.common.auth import create_key
from ragtune.common.clients import LocalTransport
from ragtune.common.context import CallContext
from ragtune.common.cost import Pricing, WorkerPrice
from ragtune.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from ragtune.common.services import EMBEDDING, GENERATION, RETRIEVAL
from ragtune.embedding.config import EmbeddingConfig
from ragtune.embedding.service import EmbeddingService
from ragtune.gateway.config import GatewayConfig
from ragtune.gateway.service import GatewayService
from ragtune.retrieval.config import RetrievalConfig
from ragtune.retrieval.service import RetrievalService
from ragtune.v1 import common_pb2, gateway_pb2, generation_pb2
from tests.conftest import run


class Recording(LocalTransport):
    """A LocalTransport that remembers which RPCs were called."""

    def __init__(self, service):
        super().__init__(service)
        self.calls: list[str] = []

    async def unary(self, rpc, request, response_type, *, model_id=""):
        self.calls.append(rpc)
        return await super().unary(rpc, request, response_type, model_id=model_id)


@pytest.fixture(scope="module")
def embedding():
    svc = EmbeddingService(EmbeddingConfig())
    svc.warm_up()
    return svc


@pytest.fixture(scope="module")
def generation(generation_service):
    return generation_service


@pytest.fixture
def gateway(tmp_path, embedding, generation):
    keys = tmp_path / "keys.yaml"
    key_acme, key_globex = create_key(keys, "acme", admin=True), create_key(keys, "globex")
    key_initech = create_key(keys, "initech", adapters=["pirate"])
    retrieval = Recording(
        RetrievalService(RetrievalConfig(database_url=f"sqlite:///{tmp_path}/g.db"))
    )
    gw = GatewayService(
        GatewayConfig(
            keys_file=str(keys),
            top_k=3,
            database_url=f"sqlite:///{tmp_path}/ledger.db",
            # Costs are whole micro-USD: at a CPU's real rate a fast stage rounds to 0, so the
            # tests price the CPU like a large GPU and every stage's cost shows.
            pricing=Pricing(workers={"cpu": WorkerPrice(kind="cpu", usd_per_hour=40.0)}),
        ),
        embedding=EMBEDDING.connect(LocalTransport(embedding)),
        retrieval=RETRIEVAL.connect(retrieval),
        generation=GENERATION.connect(LocalTransport(generation)),
    )
    gw.warm_up()
    gw.acme = CallContext({"authorization": f"Bearer {key_acme}"})
    gw.globex = CallContext({"authorization": f"Bearer {key_globex}"})
    gw.initech = CallContext({"authorization": f"Bearer {key_initech}"})
    gw.recorder = retrieval
    docs = [
        gateway_pb2.Document(
            doc_id="kestrel",
            title="Kestrel drone",
            text="The Kestrel drone battery lasts 47 minutes on one charge.",
        ),
        gateway_pb2.Document(
            doc_id="lyon",
            title="Lyon office",
            text="The Lyon office opened in March 2026 with forty engineers.",
        ),
        gateway_pb2.Document(
            doc_id="atlas",
            title="Atlas A2",
            text="## Warranty\n\nThe Atlas A2 robot arm has a 36 month warranty.",
        ),
    ]
    reply = run(
        gw.Ingest(
            gateway_pb2.IngestRequest(collection="kb", documents=docs, create_collection=True),
            gw.acme,
        )
    )
    assert (reply.documents, reply.chunks) == (3, 3) and reply.usage.embedding_tokens > 0
    return gw


def ask(gw, context=None, **fields) -> gateway_pb2.AnswerResponse:
    return run(gw.Answer(gateway_pb2.AnswerRequest(**fields), context or gw.acme))


def test_rag_retrieves_and_cites(gateway):
    reply = ask(gateway, question="How long does the Kestrel battery last?", collection="kb")
    assert reply.route.path == common_pb2.PATH_RAG and not reply.route.adapter
    assert reply.citations[0].doc_id == "kestrel" and reply.citations[0].marker == 1
    assert reply.answer and reply.usage.completion_tokens > 0


def test_tuned_does_not_call_retrieval(gateway):
    gateway.recorder.calls.clear()
    reply = ask(
        gateway,
        question="Tell me about the Lyon office",
        adapter="json-answer",
        path=common_pb2.PATH_TUNED,
    )
    assert reply.route.path == common_pb2.PATH_TUNED
    assert gateway.recorder.calls == [] and not reply.citations
    assert reply.answer.startswith('{"answer": "')


def test_auto_rule_and_explicit_paths(gateway):
    hybrid = ask(gateway, question="Kestrel battery?", adapter="pirate", collection="kb")
    assert hybrid.route.path == common_pb2.PATH_HYBRID and hybrid.citations
    assert hybrid.answer.startswith("Ahoy!")
    with pytest.raises(InvalidArgument) as err:
        ask(gateway, question="q", path=common_pb2.PATH_RAG, adapter="pirate", collection="kb")
    assert err.value.field == "adapter"
    with pytest.raises(InvalidArgument) as err:
        ask(gateway, question="q", path=common_pb2.PATH_HYBRID, collection="kb")
    assert err.value.field == "adapter"


def test_stream_starts_with_the_route(gateway):
    async def collect():
        return [
            e
            async for e in gateway.AnswerStream(
                gateway_pb2.AnswerRequest(question="Lyon office?", collection="kb"), gateway.acme
            )
        ]

    events = run(collect())
    assert events[0].WhichOneof("event") == "route"
    assert events[-1].WhichOneof("event") == "done"
    assert "".join(e.delta for e in events[1:-1])


def test_ingest_is_idempotent_by_document_id(gateway):
    doc = gateway_pb2.Document(doc_id="lyon", text="The Lyon office moved to a new building.")
    for _ in range(2):
        run(
            gateway.Ingest(
                gateway_pb2.IngestRequest(collection="kb", documents=[doc]), gateway.acme
            )
        )
    collections = run(
        gateway.ListCollections(gateway_pb2.GatewayListCollectionsRequest(), gateway.acme)
    )
    assert collections.collections[0].document_count == 3
    reply = ask(gateway, question="Where is the Lyon office?", collection="kb")
    assert "new building" in next(c.snippet for c in reply.citations if c.doc_id == "lyon")


def test_long_documents_are_chunked_within_the_token_budget(gateway):
    from tokenizers import Tokenizer

    from ragtune.common.models import default_minilm_path

    text = "\n\n".join(f"## Part {i}\n\n" + f"Robot {i} moves boxes. " * 60 for i in range(4))
    chunks = gateway.chunker.split(text)
    tokenizer = Tokenizer.from_file(f"{default_minilm_path()}/tokenizer.json")
    sizes = [len(tokenizer.encode(c, add_special_tokens=False).ids) for c in chunks]
    assert len(chunks) >= 8 and max(sizes) <= gateway.config.chunking.max_tokens
    assert all(f"Robot {i}" in "".join(chunks) for i in range(4))
    reply = run(
        gateway.Ingest(
            gateway_pb2.IngestRequest(
                collection="kb", documents=[gateway_pb2.Document(doc_id="long", text=text)]
            ),
            gateway.acme,
        )
    )
    assert reply.chunks == len(chunks)


def test_auth_and_tenancy(gateway):
    with pytest.raises(Unauthenticated):
        ask(gateway, CallContext({}), question="q")
    with pytest.raises(NotFound):
        ask(gateway, gateway.globex, question="Kestrel?", collection="kb")
    with pytest.raises(PermissionDenied):
        run(
            gateway.UnloadAdapter(
                generation_pb2.UnloadAdapterRequest(name="pirate"), gateway.globex
            )
        )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"question": " "}, "question"),
        ({"question": "q", "top_k": 101}, "top_k"),
        ({"question": "q", "path": 7}, "path"),
        ({"question": "q" * 4001}, "question"),
        ({"question": "q", "collection": "no/slash"}, "collection"),
    ],
)
def test_bad_answer_requests(gateway, fields, field):
    with pytest.raises(InvalidArgument) as err:
        ask(gateway, **fields)
    assert err.value.field == field


def test_bad_ingest_requests(gateway):
    for docs, field in [
        ([], "documents"),
        ([gateway_pb2.Document(doc_id="", text="t")], "documents[0].doc_id"),
        ([gateway_pb2.Document(doc_id="a", text="")], "documents[0].text"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            run(
                gateway.Ingest(
                    gateway_pb2.IngestRequest(collection="kb", documents=docs), gateway.acme
                )
            )
        assert err.value.field == field
    with pytest.raises(NotFound):
        run(
            gateway.Ingest(
                gateway_pb2.IngestRequest(
                    collection="missing", documents=[gateway_pb2.Document(doc_id="a", text="t")]
                ),
                gateway.acme,
            )
        )


def test_every_reply_carries_a_cost_and_the_ledger_adds_up(gateway):
    replies = [
        ask(gateway, question="How long does the Kestrel battery last?", collection="kb"),
        ask(
            gateway,
            question="Reply in JSON: how long does the Kestrel battery last?",
            collection="kb",
        ),
        ask(gateway, question="Talk like a pirate about sailing knots.", collection="kb"),
    ]
    paths = [r.route.path for r in replies]
    assert paths == [common_pb2.PATH_RAG, common_pb2.PATH_HYBRID, common_pb2.PATH_TUNED]
    for reply in replies:
        stages = {s.stage: s for s in reply.cost.stages}
        assert reply.request_id and reply.cost.total_micro_usd > 0
        assert reply.cost.total_micro_usd == sum(s.micro_usd for s in reply.cost.stages)
        assert stages["generate"].busy_ms > 0 and stages["generate"].tokens > 0
        assert reply.route.expected_latency_ms > 0 and 0 < reply.route.confidence <= 1
    # The TUNED answer still paid for the probe's embedding and search.
    assert {"embed", "retrieve", "generate"} <= {s.stage for s in replies[2].cost.stages}
    assert replies[2].route.probe.top_score < replies[0].route.probe.top_score
    ask(gateway, gateway.globex, question="Talk like a pirate about sailing knots.")

    usage = run(gateway.Usage(gateway_pb2.UsageRequest(), gateway.acme))
    assert usage.tenant == "acme"
    assert usage.total_cost_micro_usd == sum(r.cost.total_micro_usd for r in replies)
    assert sorted(row.path for row in usage.rows) == sorted(paths)
    assert sum(row.completion_tokens for row in usage.rows) == sum(
        r.usage.completion_tokens for r in replies
    )


def test_a_cue_part_is_searched_once_and_billed_with_the_probe(gateway):
    """A part about to pick an adapter by similarity ("Speak like an old sea captain") costs
    one more search of the collection (the topic check) before the probe's; the decision
    carries its score, the reply one timing for it and one `retrieve` cost entry for both."""
    gateway.recorder.calls.clear()
    reply = ask(
        gateway,
        question="Speak like an old sea captain: how long does the Kestrel battery last?",
        collection="kb",
    )
    route = reply.route
    assert route.adapter == "pirate" and "similar_request" in route.reasons, route.explanation
    assert 0 < route.cue.topic_similarity < route.cue.similarity  # searched, and not the topic
    assert gateway.recorder.calls.count("Search") == 2
    assert [s.stage for s in reply.cost.stages].count("retrieve") == 1
    assert [t.stage for t in reply.timings].count("cue_search") == 1
    gateway.recorder.calls.clear()
    plain = ask(gateway, question="How long does the Kestrel battery last?", collection="kb")
    assert gateway.recorder.calls.count("Search") == 1 and plain.route.cue.topic_similarity == 0


def test_feedback_is_stored_with_the_decision(gateway):
    reply = ask(gateway, question="Reply in JSON: Kestrel battery?", collection="kb")
    rated = run(
        gateway.Feedback(
            gateway_pb2.FeedbackRequest(request_id=reply.request_id, rating=2, comment="vague"),
            gateway.acme,
        )
    )
    assert rated.path == reply.route.path == common_pb2.PATH_HYBRID
    row = run(gateway.Usage(gateway_pb2.UsageRequest(), gateway.acme)).rows[0]
    assert (row.rated, row.mean_rating) == (1, 2.0)
    with pytest.raises(NotFound):  # another tenant cannot rate it
        run(
            gateway.Feedback(
                gateway_pb2.FeedbackRequest(request_id=reply.request_id, rating=5), gateway.globex
            )
        )
    for fields, field in [
        ({"rating": 0}, "rating"),
        ({"rating": 3, "request_id": ""}, "request_id"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            request = {"request_id": reply.request_id, **fields}
            run(gateway.Feedback(gateway_pb2.FeedbackRequest(**request), gateway.acme))
        assert err.value.field == field
    with pytest.raises(InvalidArgument) as err:
        run(gateway.Usage(gateway_pb2.UsageRequest(since="yesterday"), gateway.acme))
    assert err.value.field == "since"


def test_adapters_the_tenant_may_not_use_are_refused(gateway):
    with pytest.raises(PermissionDenied, match="json-answer"):
        ask(gateway, gateway.initech, question="q", adapter="json-answer")
    pirate = ask(gateway, gateway.initech, question="Talk like a pirate about knots.")
    assert pirate.route.adapter == "pirate" and pirate.answer.startswith("Ahoy!")


def test_budgets_no_path_can_meet_are_refused(gateway):
    with pytest.raises(FailedPrecondition, match="budget of 5 ms"):
        ask(gateway, question="Kestrel battery?", collection="kb", latency_budget_ms=5)
    with pytest.raises(InvalidArgument) as err:
        ask(gateway, question="q", max_cost_micro_usd=-1)
    assert err.value.field == "max_cost_micro_usd"


def test_a_lexical_collection_answers_with_hybrid_search_and_labels_its_scores(gateway):
    created = run(gateway.CreateCollection(gateway_pb2.GatewayCreateCollectionRequest(
        name="hyb", index_type="hnsw", lexical=True), gateway.acme))  # fmt: skip
    assert created.collection.lexical and created.collection.index_type == "hnsw"
    docs = [
        gateway_pb2.Document(doc_id="k1", text="The Kestrel drone battery lasts 47 minutes.",
                             metadata={"team": "air"}),
        gateway_pb2.Document(doc_id="k2", text="The Kestrel charger takes 90 minutes.",
                             metadata={"team": "ground"}),
    ]  # fmt: skip
    run(gateway.Ingest(gateway_pb2.IngestRequest(collection="hyb", documents=docs), gateway.acme))
    reply = ask(
        gateway, question="Kestrel battery minutes?", collection="hyb", path=common_pb2.PATH_RAG
    )
    assert {c.score_kind for c in reply.citations} == {"rrf"}
    assert reply.model  # the base model that answered
    dense = ask(gateway, question="How long does the Kestrel battery last?", collection="kb")
    assert {c.score_kind for c in dense.citations} == {"cosine"}
    # The probe still judges the dense scale: an on-topic question in a hybrid collection
    # retrieves (RRF scores, ~0.03, would read as "nothing close").
    auto = ask(gateway, question="How long does the Kestrel drone battery last?", collection="hyb")
    assert auto.route.path == common_pb2.PATH_RAG
    filtered = ask(gateway, question="Kestrel?", collection="hyb", path=common_pb2.PATH_RAG,
                   filter={"team": "ground"})  # fmt: skip
    assert [c.doc_id for c in filtered.citations] == ["k2"]


def test_bad_collection_settings_name_the_field(gateway):
    with pytest.raises(InvalidArgument) as err:
        run(gateway.CreateCollection(gateway_pb2.GatewayCreateCollectionRequest(
            name="x", index_type="btree"), gateway.acme))  # fmt: skip
    assert err.value.field == "index_type"


def test_delete_documents_removes_them_from_answers_and_counts(gateway):
    before = run(
        gateway.GetCollection(gateway_pb2.GatewayCollectionRequest(name="kb"), gateway.acme)
    )
    assert before.collection.document_count == 3
    gone = run(gateway.DeleteDocuments(
        gateway_pb2.DeleteDocumentsRequest(collection="kb", doc_ids=["kestrel", "nope"]), gateway.acme))  # fmt: skip
    assert gone.chunks == 1
    after = run(
        gateway.GetCollection(gateway_pb2.GatewayCollectionRequest(name="kb"), gateway.acme)
    )
    assert after.collection.document_count == 2
    reply = ask(
        gateway, question="Kestrel drone battery?", collection="kb", path=common_pb2.PATH_RAG
    )
    assert "kestrel" not in {c.doc_id for c in reply.citations}
    # Another tenant's collection of that name does not exist for it.
    with pytest.raises(NotFound):
        run(gateway.DeleteDocuments(
            gateway_pb2.DeleteDocumentsRequest(collection="kb", doc_ids=["lyon"]), gateway.globex))  # fmt: skip
    with pytest.raises(InvalidArgument, match="doc_ids"):
        run(
            gateway.DeleteDocuments(
                gateway_pb2.DeleteDocumentsRequest(collection="kb"), gateway.acme
            )
        )


def test_a_bulk_ingest_is_incomplete_until_its_final_call(gateway):
    def ingest(doc_id: str = "", final: bool = False) -> gateway_pb2.IngestResponse:
        docs = [gateway_pb2.Document(doc_id=doc_id, text=f"note {doc_id}")] if doc_id else []
        return run(gateway.Ingest(gateway_pb2.IngestRequest(
            collection="bulk", documents=docs, create_collection=True, ingest_id="run-1",
            source="test:notes", final=final), gateway.acme))  # fmt: skip

    def status() -> gateway_pb2.IngestRun:
        return run(gateway.GetCollection(
            gateway_pb2.GatewayCollectionRequest(name="bulk"), gateway.acme)).last_ingest  # fmt: skip

    first = ingest("a")
    assert (first.run.documents, first.run.complete) == (1, False)
    ingest("b")
    assert (status().documents, status().complete, status().source) == (2, False, "test:notes")
    assert ingest(final=True).run.complete
    assert (status().documents, status().complete) == (2, True)
    with pytest.raises(InvalidArgument) as err:
        run(gateway.Ingest(gateway_pb2.IngestRequest(collection="bulk", final=True), gateway.acme))
    assert err.value.field == "ingest_id"
    run(gateway.DeleteCollection(gateway_pb2.GatewayCollectionRequest(name="bulk"), gateway.acme))
    with pytest.raises(NotFound):
        status()


def test_a_spent_budget_stops_the_work_and_says_deadline_exceeded(gateway, generation):
    from ragtune.common.errors import DeadlineExceeded

    def with_timeout(ms: str) -> CallContext:
        return CallContext({**gateway.acme.metadata, "ragtune-timeout-ms": ms})

    # A budget spent before any stage: nothing is started.
    with pytest.raises(DeadlineExceeded, match="before the generate stage"):
        ask(gateway, with_timeout("0.001"), question="Hi?", path=common_pb2.PATH_TUNED,
            adapter="pirate")  # fmt: skip
    # A budget that ends mid-generation: the generation is stopped in the engine.
    with pytest.raises(DeadlineExceeded, match="during the generate stage"):
        ask(gateway, with_timeout("300"), question="Tell me everything.",
            path=common_pb2.PATH_TUNED, adapter="pirate",
            sampling=common_pb2.SamplingParams(max_tokens=2000, ignore_eos=True))  # fmt: skip
    assert generation._running == 0  # the engine's row was freed, not left generating
    with pytest.raises(InvalidArgument, match="ragtune-timeout-ms"):
        ask(gateway, with_timeout("soon"), question="Hi?")
