"""Index types, exact filters, lexical and hybrid search, collection settings, idempotent upserts."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragtune.common.errors import AlreadyExists, InvalidArgument
from ragtune.retrieval.backend import AnnSettings, CollectionIndex
from ragtune.retrieval.config import RetrievalConfig
from ragtune.retrieval.service import RetrievalService
from ragtune.retrieval.store import ChunkRow
from ragtune.v1 import retrieval_pb2 as pb
from tests.conftest import run

DIMS = 32


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 20 centres: ANN indexes meet realistic structure."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, DIMS))
    vectors = centres[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, DIMS))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def rows(vectors: np.ndarray) -> list[ChunkRow]:
    return [
        ChunkRow(i + 1, f"d{i}", f"d{i}#0", f"text {i}", {"shard": str(i % 5)}, v)
        for i, v in enumerate(vectors)
    ]


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf_pq", "gpu_flat", "gpu_cagra"])
def test_every_index_type_finds_the_neighbours_and_filters_exactly(index_type, caplog):
    vectors = clustered(3000)
    settings = AnnSettings(ivf_min_train=2000)
    with caplog.at_level(logging.WARNING):
        index = CollectionIndex(DIMS, "ip", index_type, settings)
    if index_type.startswith("gpu_"):  # no GPU here: the CPU counterpart, said out loud
        assert "no GPU" in index.active and "FAISS sees no GPU" in caplog.text
    data = rows(vectors)
    index.replace_documents([r.doc_id for r in data], data)
    exact = CollectionIndex(DIMS, "ip", "flat")
    exact.replace_documents([r.doc_id for r in data], data)
    queries = clustered(50, seed=1)
    recall = np.mean(
        [
            len({h.chunk.id for h in index.search(q, 10, None)}
                & {h.chunk.id for h in exact.search(q, 10, None)}) / 10
            for q in queries
        ]
    )  # fmt: skip
    assert recall >= 0.95, recall
    if index_type == "ivf_pq":
        assert index.active == "ivf_pq"

    def shard_2(meta):
        return meta["shard"] == "2"

    for q in queries[:10]:
        got = index.search(q, 10, shard_2)
        assert [h.chunk.id for h in got] == [h.chunk.id for h in exact.search(q, 10, shard_2)]
        assert all(h.chunk.metadata["shard"] == "2" for h in got)

    # Deletes are honoured by every type (HNSW skips them until it is rebuilt).
    gone = [r.doc_id for r in data[:1500]]
    index.replace_documents(gone, [])
    for q in queries[:10]:
        assert all(h.chunk.id > 1500 for h in index.search(q, 10, None))


@pytest.fixture
def service(database_url):
    svc = RetrievalService(RetrievalConfig(database_url=database_url))
    run(
        svc.CreateCollection(
            pb.CreateCollectionRequest(
                tenant="acme", name="kb", dims=DIMS, embedding_model="m", lexical=True
            )
        )
    )
    docs = {
        "kestrel": ("The Kestrel drone battery lasts 47 minutes.", "drones"),
        "lyon": ("The Lyon office opened in March with forty engineers.", "offices"),
        "atlas": ("The Atlas arm carries a warranty of 36 months.", "arms"),
        "heron": ("Heron robots carry pallets through narrow aisles.", "robots"),
    }
    vectors = clustered(len(docs), seed=3)
    chunks = [
        pb.Chunk(chunk_id=f"{d}#0", doc_id=d, text=text, vector=v, metadata={"team": team})
        for (d, (text, team)), v in zip(docs.items(), vectors, strict=True)
    ]
    svc.vectors = dict(zip(docs, vectors, strict=True))
    svc.seq = run(svc.Upsert(pb.UpsertRequest(tenant="acme", collection="kb", chunks=chunks))).seq
    svc.chunks = chunks
    return svc


def search(svc, **fields) -> list[str]:
    request = pb.SearchRequest(
        tenant="acme", collection="kb", top_k=fields.pop("top_k", 4), **fields
    )
    return [h.chunk.doc_id for h in run(svc.Search(request)).hits]


def test_lexical_dense_and_hybrid_modes(service):
    lexical = search(service, query_text="battery minutes", mode=pb.SEARCH_MODE_LEXICAL)
    assert lexical == ["kestrel"]  # only chunks sharing a stemmed term score
    assert search(service, query_vector=service.vectors["atlas"])[0] == "atlas"
    hybrid = search(
        service,
        query_vector=service.vectors["atlas"],
        query_text="drone battery",
        mode=pb.SEARCH_MODE_HYBRID,
        lexical_weight=2.0,
    )
    assert hybrid[:2] == ["kestrel", "atlas"]  # the heavier lexical ranking leads the fusion
    clause = pb.MetadataFilter(key="team", any_of=["arms", "robots"])
    filtered = search(service, query_vector=service.vectors["kestrel"], filters=[clause])
    assert sorted(filtered) == ["atlas", "heron"]
    assert (
        search(service, query_text="battery", mode=pb.SEARCH_MODE_LEXICAL, filters=[clause]) == []
    )


def test_lexical_index_follows_upserts_and_deletes(service):
    moved = pb.Chunk(
        chunk_id="lyon#0", doc_id="lyon", text="The Lyon office moved to a battery factory.",
        vector=service.vectors["lyon"], metadata={"team": "offices"},
    )  # fmt: skip
    run(service.Upsert(pb.UpsertRequest(tenant="acme", collection="kb", chunks=[moved])))
    battery = search(service, query_text="battery", mode=pb.SEARCH_MODE_LEXICAL)
    assert sorted(battery) == ["kestrel", "lyon"]
    run(service.Delete(pb.DeleteRequest(tenant="acme", collection="kb", doc_ids=["kestrel"])))
    assert search(service, query_text="battery", mode=pb.SEARCH_MODE_LEXICAL) == ["lyon"]


def test_upserting_an_unchanged_document_writes_nothing(service):
    again = run(
        service.Upsert(pb.UpsertRequest(tenant="acme", collection="kb", chunks=service.chunks))
    )
    assert (again.seq, again.replaced_documents) == (service.seq, 0)
    assert service.store.last_seq() == service.seq


def test_settings_and_bad_searches_are_checked(service):
    def create(**fields):
        base = {"tenant": "acme", "name": "kb", "dims": DIMS, "embedding_model": "m"}
        return run(service.CreateCollection(pb.CreateCollectionRequest(**{**base, **fields})))

    assert create(exist_ok=True, lexical=True).collection.active_index == "flat"
    with pytest.raises(AlreadyExists, match="index_type='flat'"):
        create(exist_ok=True, lexical=True, index_type="hnsw")
    for fields, field in [({"metric": "cosine"}, "metric"), ({"index_type": "lsh"}, "index_type")]:
        with pytest.raises(InvalidArgument) as err:
            create(name="other", **fields)
        assert err.value.field == field
    bad = [
        ({"query_vector": [0.1] * 3}, "query_vector"),
        ({"mode": pb.SEARCH_MODE_LEXICAL}, "query_text"),
        ({"query_text": "x", "mode": 7}, "mode"),
        ({"query_vector": service.vectors["kestrel"], "filters": [pb.MetadataFilter(key="team")]},
         "filters[0].any_of"),
        ({"query_vector": service.vectors["kestrel"],
          "filters": [pb.MetadataFilter(key="", any_of=["x"])]}, "filters[0].key"),
    ]  # fmt: skip
    for fields, field in bad:
        with pytest.raises(InvalidArgument) as err:
            search(service, **fields)
        assert err.value.field == field
    create(name="dense-only")
    with pytest.raises(InvalidArgument, match="no lexical index"):
        run(service.Search(pb.SearchRequest(tenant="acme", collection="dense-only", top_k=1,
                                            query_text="x", mode=pb.SEARCH_MODE_LEXICAL)))  # fmt: skip
