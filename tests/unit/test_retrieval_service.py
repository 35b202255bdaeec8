import numpy as np
import pytest

from ragtune.common.errors import AlreadyExists, InvalidArgument, NotFound
from ragtune.retrieval.config import RetrievalConfig
from ragtune.retrieval.service import RetrievalService
from ragtune.v1 import retrieval_pb2 as pb
from tests.conftest import run

DIMS = 8


def unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=DIMS)
    return (v / np.linalg.norm(v)).tolist()


def chunk(doc: str, n: int, seed: int, **meta: str) -> pb.Chunk:
    return pb.Chunk(
        chunk_id=f"{doc}#{n}",
        doc_id=doc,
        text=f"text of {doc} part {n}",
        vector=unit(seed),
        metadata=meta,
    )


@pytest.fixture
def url(database_url):
    return database_url


@pytest.fixture
def service(url):
    svc = RetrievalService(RetrievalConfig(database_url=url))
    run(
        svc.CreateCollection(
            pb.CreateCollectionRequest(tenant="acme", name="docs", dims=DIMS, embedding_model="m")
        )
    )
    return svc


def search(svc, vector, top_k=10, tenant="acme", **kw) -> pb.SearchResponse:
    return run(
        svc.Search(
            pb.SearchRequest(
                tenant=tenant, collection="docs", query_vector=vector, top_k=top_k, **kw
            )
        )
    )


def test_search_finds_the_nearest_chunk_first(service):
    run(
        service.Upsert(
            pb.UpsertRequest(
                tenant="acme", collection="docs", chunks=[chunk(f"d{i}", 0, i) for i in range(20)]
            )
        )
    )
    reply = search(service, unit(7), top_k=3)
    assert [h.chunk.chunk_id for h in reply.hits][0] == "d7#0"
    assert reply.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(reply.hits) == 3 and not reply.hits[0].chunk.vector


def test_upsert_replaces_a_document_instead_of_duplicating_it(service):
    first = run(
        service.Upsert(
            pb.UpsertRequest(
                tenant="acme", collection="docs", chunks=[chunk("d1", 0, 1), chunk("d1", 1, 2)]
            )
        )
    )
    second = run(
        service.Upsert(
            pb.UpsertRequest(tenant="acme", collection="docs", chunks=[chunk("d1", 0, 3)])
        )
    )
    assert second.seq > first.seq and second.replaced_documents == 1
    hits = search(service, unit(1)).hits
    assert [h.chunk.chunk_id for h in hits] == ["d1#0"]
    assert hits[0].chunk.text == "text of d1 part 0"
    listed = run(service.ListCollections(pb.ListCollectionsRequest(tenant="acme"))).collections
    assert (listed[0].chunk_count, listed[0].document_count) == (1, 1)


def test_delete_removes_a_document(service):
    run(
        service.Upsert(
            pb.UpsertRequest(
                tenant="acme", collection="docs", chunks=[chunk("a", 0, 1), chunk("b", 0, 2)]
            )
        )
    )
    reply = run(service.Delete(pb.DeleteRequest(tenant="acme", collection="docs", doc_ids=["a"])))
    assert reply.deleted == 1
    assert [h.chunk.doc_id for h in search(service, unit(1)).hits] == ["b"]


def test_metadata_filter_returns_only_matching_chunks(service):
    chunks = [chunk(f"d{i}", 0, i, lang="en" if i % 3 else "fr") for i in range(30)]
    run(service.Upsert(pb.UpsertRequest(tenant="acme", collection="docs", chunks=chunks)))
    hits = search(service, unit(4), top_k=30, filter={"lang": "fr"}).hits
    assert {h.chunk.doc_id for h in hits} == {f"d{i}" for i in range(0, 30, 3)}


def test_index_is_rebuilt_from_the_database_on_start(service, url):
    reply = run(
        service.Upsert(
            pb.UpsertRequest(
                tenant="acme", collection="docs", chunks=[chunk(f"d{i}", 0, i) for i in range(5)]
            )
        )
    )
    restarted = RetrievalService(RetrievalConfig(database_url=url))
    assert restarted.applied_seq == reply.seq
    assert search(restarted, unit(3)).hits[0].chunk.doc_id == "d3"


def test_min_seq_reads_writes_made_by_another_replica(service, url):
    other = RetrievalService(RetrievalConfig(database_url=url))
    written = run(
        service.Upsert(
            pb.UpsertRequest(tenant="acme", collection="docs", chunks=[chunk("new", 0, 9)])
        )
    )
    reply = search(other, unit(9), min_seq=written.seq)
    assert reply.applied_seq >= written.seq and reply.hits[0].chunk.doc_id == "new"


def test_a_collection_dropped_and_made_again_elsewhere_is_searched_anew(service, url):
    run(service.Upsert(pb.UpsertRequest(tenant="acme", collection="docs",
                                        chunks=[chunk("old", 0, 1)])))  # fmt: skip
    assert search(service, unit(1)).hits[0].chunk.doc_id == "old"  # this replica knows it now
    other = RetrievalService(RetrievalConfig(database_url=url))
    run(other.DeleteCollection(pb.DeleteCollectionRequest(tenant="acme", name="docs")))
    run(other.CreateCollection(pb.CreateCollectionRequest(tenant="acme", name="docs", dims=4,
                                                          embedding_model="m")))  # fmt: skip
    written = run(other.Upsert(pb.UpsertRequest(tenant="acme", collection="docs", chunks=[
        pb.Chunk(chunk_id="new#0", doc_id="new", text="new", vector=[1, 0, 0, 0])])))  # fmt: skip
    # Read-your-writes: the first replica applies the drop, then finds the new collection.
    reply = search(service, [1, 0, 0, 0], min_seq=written.seq)
    assert [h.chunk.doc_id for h in reply.hits] == ["new"]
    with pytest.raises(InvalidArgument, match="4"):  # the new collection's dimensions
        search(service, unit(1))


def test_tenants_cannot_see_each_others_collections(service):
    run(
        service.Upsert(
            pb.UpsertRequest(tenant="acme", collection="docs", chunks=[chunk("a", 0, 1)])
        )
    )
    with pytest.raises(NotFound) as err:
        search(service, unit(1), tenant="globex")
    assert "docs" in str(err.value) and "acme" not in str(err.value)
    assert not run(service.ListCollections(pb.ListCollectionsRequest(tenant="globex"))).collections
    # globex may create its own "docs"; it is a different collection
    run(
        service.CreateCollection(
            pb.CreateCollectionRequest(tenant="globex", name="docs", dims=DIMS, embedding_model="m")
        )
    )
    assert not search(service, unit(1), tenant="globex").hits


def test_bad_requests_are_refused(service):
    with pytest.raises(InvalidArgument) as err:
        search(service, unit(1), top_k=0)
    assert err.value.field == "top_k"
    with pytest.raises(InvalidArgument) as err:
        search(service, [1.0, 0.0])
    assert err.value.field == "query_vector"
    bad = pb.Chunk(chunk_id="x#0", doc_id="x", text="t", vector=[1.0, 0.0])
    with pytest.raises(InvalidArgument) as err:
        run(service.Upsert(pb.UpsertRequest(tenant="acme", collection="docs", chunks=[bad])))
    assert err.value.field == "chunks[0].vector"
    with pytest.raises(AlreadyExists):
        run(
            service.CreateCollection(
                pb.CreateCollectionRequest(
                    tenant="acme", name="docs", dims=16, embedding_model="m", exist_ok=True
                )
            )
        )
    with pytest.raises(InvalidArgument):
        run(
            service.CreateCollection(
                pb.CreateCollectionRequest(
                    tenant="acme", name="bad name!", dims=8, embedding_model="m"
                )
            )
        )


def test_a_failed_batch_writes_nothing(service):
    good, bad = chunk("g", 0, 1), pb.Chunk(chunk_id="b#0", doc_id="b", text="t", vector=[1.0])
    with pytest.raises(InvalidArgument):
        run(service.Upsert(pb.UpsertRequest(tenant="acme", collection="docs", chunks=[good, bad])))
    assert not search(service, unit(1)).hits


def test_oversize_batches_are_refused_whole(url):
    svc = RetrievalService(
        RetrievalConfig(database_url=url, max_upsert_chunks=2, max_delete_documents=2)
    )
    run(svc.CreateCollection(pb.CreateCollectionRequest(
        tenant="acme", name="docs", dims=DIMS, embedding_model="m")))  # fmt: skip
    with pytest.raises(InvalidArgument, match="limit per call is 2") as err:
        run(svc.Upsert(pb.UpsertRequest(
            tenant="acme", collection="docs", chunks=[chunk(f"d{i}", 0, i) for i in range(3)])))  # fmt: skip
    assert err.value.field == "chunks"
    assert svc.store.counts(svc.store.get_collection("acme", "docs").id) == (0, 0)
    with pytest.raises(InvalidArgument, match="has 3 documents; the limit per call is 2") as err:
        run(svc.Delete(pb.DeleteRequest(tenant="acme", collection="docs", doc_ids=["a", "b", "c"])))
    assert err.value.field == "doc_ids"


def test_faiss_uses_the_threads_the_replica_reserved(url, monkeypatch):
    import faiss

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray sets for a fractional-CPU replica
    svc = RetrievalService(RetrievalConfig(database_url=url))
    assert svc.stats()["faiss_threads"] == 1
    # A few queries already go through one BLAS product rather than a scan each.
    assert faiss.cvar.distance_compute_blas_threshold == 800
    explicit = RetrievalService(RetrievalConfig(database_url=url, faiss_threads=3))
    assert explicit.stats()["faiss_threads"] == 3


def test_concurrent_searches_answered_together_match_searches_alone(service):
    import asyncio

    import faiss

    dims = 64  # 40 queries x 64 dims is over the BLAS switch: one matrix product for the batch
    rng = np.random.default_rng(5)

    def vec() -> list[float]:
        v = rng.normal(size=dims)
        return (v / np.linalg.norm(v)).tolist()

    run(service.CreateCollection(pb.CreateCollectionRequest(
        tenant="acme", name="wide", dims=dims, embedding_model="m")))  # fmt: skip
    chunks = [pb.Chunk(chunk_id=f"w{i}#0", doc_id=f"w{i}", text=f"w{i}", vector=vec())
              for i in range(300)]  # fmt: skip
    run(service.Upsert(pb.UpsertRequest(tenant="acme", collection="wide", chunks=chunks)))
    queries = [vec() for _ in range(40)]

    def request(q: list[float]) -> pb.SearchRequest:
        return pb.SearchRequest(tenant="acme", collection="wide", query_vector=q, top_k=5)

    async def together():
        return await asyncio.gather(*(service.Search(request(q)) for q in queries))

    batched = run(together())
    (stats,) = service.stats()["search_batches"].values()
    assert stats["largest_batch_requests"] * dims >= faiss.cvar.distance_compute_blas_threshold
    for q, reply in zip(queries, batched, strict=True):
        alone = run(service.Search(request(q)))  # one query: scanned, not BLAS
        assert [h.chunk.chunk_id for h in reply.hits] == [h.chunk.chunk_id for h in alone.hits]
        assert [h.score for h in reply.hits] == pytest.approx(
            [h.score for h in alone.hits], abs=1e-5
        )
