"""The gateway class over in-process services (no Ray): routing, stages, auth, ingest."""

from __future__ import annotations

import pytest

from ragtune.common.auth import create_key
from ragtune.common.clients import LocalClient
from ragtune.common.context import CallContext
from ragtune.common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from ragtune.embedding.config import EmbeddingConfig
from ragtune.embedding.service import EmbeddingService
from ragtune.gateway.config import GatewayConfig
from ragtune.gateway.service import GatewayService
from ragtune.retrieval.config import RetrievalConfig
from ragtune.retrieval.service import RetrievalService
from ragtune.v1 import common_pb2, gateway_pb2, generation_pb2
from tests.conftest import run


class Recording(LocalClient):
    """A LocalClient that remembers which methods were called."""

    def __init__(self, service):
        super().__init__(service)
        self.calls: list[str] = []

    async def call(self, method, request):
        self.calls.append(method)
        return await super().call(method, request)


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
    retrieval = Recording(
        RetrievalService(RetrievalConfig(database_url=f"sqlite:///{tmp_path}/g.db"))
    )
    gw = GatewayService(
        GatewayConfig(keys_file=str(keys), top_k=3),
        embedding=LocalClient(embedding),
        retrieval=retrieval,
        generation=LocalClient(generation),
    )
    gw.warm_up()
    gw.acme = CallContext({"authorization": f"Bearer {key_acme}"})
    gw.globex = CallContext({"authorization": f"Bearer {key_globex}"})
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
    reply = ask(gateway, question="Tell me about the Lyon office", adapter="json-answer")
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

    from ragtune.embedding.backend import default_minilm_path

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
