"""The Retrieval RPCs as a plain class (no Serve decorator: ``app.py`` wraps it).

Writes go to the store first; the replica then applies the change log to its indexes
(``replica.py``), the same way it catches up with writes made by other replicas (``min_seq``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np

from ragtune.common.batching import DynamicBatcher
from ragtune.common.errors import InvalidArgument, NotFound, Unavailable
from ragtune.common.metrics import gauge
from ragtune.common.telemetry import annotate
from ragtune.common.threads import reserved_threads, set_faiss_blas_threshold, set_faiss_threads
from ragtune.common.validation import check_count, check_name, check_range
from ragtune.retrieval import snapshots
from ragtune.retrieval.backend import INDEX_TYPES, METRICS, CollectionIndex, Hit
from ragtune.retrieval.config import RetrievalConfig
from ragtune.retrieval.query import FUSION_DEPTH, fuse, metadata_filter
from ragtune.retrieval.replica import ReplicaIndexes
from ragtune.retrieval.store import CollectionRow, NewChunk, Store
from ragtune.v1 import retrieval_pb2 as pb

R = TypeVar("R")


def _counted(rpc: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Count the RPC's calls in ``self.calls`` under its own name (``stats()`` reports them)."""

    @functools.wraps(rpc)
    async def counted(self: RetrievalService, *args: Any, **kwargs: Any) -> R:
        self.calls[rpc.__name__] += 1
        return await rpc(self, *args, **kwargs)

    return counted


log = logging.getLogger(__name__)


class _BatchSearch:
    """Queries that arrived together, searched in one call; each gets its own top_k."""

    def __init__(self, index: CollectionIndex, threads: int) -> None:
        self.index, self.threads = index, threads

    def __call__(self, items: list[tuple[np.ndarray, int]]) -> list[list[Hit]]:
        # OpenMP's thread count is per calling thread, and this runs in a worker thread. A batch
        # too small for BLAS is scanned query by query, one thread each: idle OpenMP threads
        # would only spin against the proxy on the same cores.
        blas = len(items) * self.index.dims >= faiss.cvar.distance_compute_blas_threshold
        set_faiss_threads(self.threads if blas else 1)
        queries = np.stack([q for q, _ in items])
        found = self.index.search_batch(queries, max(k for _, k in items))
        return [hits[:k] for hits, (_, k) in zip(found, items, strict=True)]


class RetrievalService:
    def __init__(self, config: RetrievalConfig) -> None:
        self.config = config
        self._faiss_threads = config.faiss_threads or reserved_threads()
        set_faiss_blas_threshold(self._faiss_threads)
        self.store = Store(config.database_url)
        snapshot_dir = Path(config.snapshot_dir) if config.snapshot_dir else None
        self.replica = ReplicaIndexes(self.store, snapshot_dir)
        self._batchers: dict[int, DynamicBatcher] = {}
        # (tenant, name) -> row, for searches: the database is not asked on every Search.
        # Entries go when this replica applies the collection's drop (``_catch_up``).
        self._rows: dict[tuple[str, str], CollectionRow] = {}
        self._lock = asyncio.Lock()  # one writer of the replica's indexes at a time
        self.calls: Counter[str] = Counter()  # RPC name -> calls, read by tests and operators
        self._tail_task: asyncio.Task | None = None
        self._lag_changes = 0  # at the last check of the change log
        self._applied = gauge(
            "ragtune_retrieval_applied_seq",
            "Change-log sequence number this replica has applied to its indexes.",
        )
        self._lag = gauge(
            "ragtune_retrieval_replica_lag_changes",
            "Changes logged but not yet applied by this replica, at its last check.",
        )
        self._vectors = gauge(
            "ragtune_retrieval_index_vectors",
            "Vectors in this replica's in-memory indexes, all collections together.",
        )
        self._last_snapshot = time.monotonic()
        self.replica.restore_snapshot()
        self._catch_up()

    @property
    def applied_seq(self) -> int:
        """The last change-log sequence number this replica's indexes reflect."""
        return self.replica.applied_seq

    # -- snapshots and tailing ----------------------------------------------------------------

    async def snapshot(self) -> int:
        """Write a snapshot now if the log moved since the newest one; returns its seq (0 when
        snapshots are off or nothing changed)."""
        folder = self.replica.snapshot_dir
        if folder is None or self.applied_seq <= snapshots.latest_seq(folder):
            return 0
        async with self._lock:
            state = self.replica.export()
        await asyncio.to_thread(snapshots.save, folder, state)
        self._last_snapshot = time.monotonic()
        return state.seq

    async def start(self) -> None:
        """Tail the change log (under Serve: writes made through other replicas show up here
        within ``tail_interval_s`` even when no Search asks for them)."""
        self._tail_task = asyncio.get_running_loop().create_task(self._tail())

    def report_gauges(self) -> None:
        self._applied.set(self.applied_seq)
        self._lag.set(self._lag_changes)
        self._vectors.set(sum(len(index) for index in self.replica.dense.values()))

    async def shutdown(self) -> None:
        if self._tail_task is not None:
            self._tail_task.cancel()

    async def _tail(self) -> None:
        while True:
            await asyncio.sleep(self.config.tail_interval_s)
            try:
                head = await asyncio.to_thread(self.store.last_seq)
                self._lag_changes = max(0, head - self.applied_seq)
                if head > self.applied_seq:
                    async with self._lock:
                        await asyncio.to_thread(self._catch_up)
                if time.monotonic() - self._last_snapshot >= self.config.snapshot_interval_s:
                    self._last_snapshot = time.monotonic()
                    await self.snapshot()
            except Exception:  # the database may be briefly unreachable: try again next time
                log.warning("tailing the change log failed", exc_info=True)

    def stats(self) -> dict[str, object]:
        batches = {cid: asdict(b.stats) for cid, b in self._batchers.items()}
        return {
            "applied_seq": self.applied_seq,
            "calls": dict(self.calls),
            "search_batches": batches,
            "faiss_threads": self._faiss_threads,
        }

    def check_health(self) -> None:
        self.store.last_seq()

    def _batcher(self, collection_id: int, index: CollectionIndex) -> DynamicBatcher:
        batcher = self._batchers.get(collection_id)
        if batcher is None or batcher.fn.index is not index:  # new after a drop and re-create
            batcher = self._batchers[collection_id] = DynamicBatcher(
                _BatchSearch(index, self._faiss_threads),
                max_batch_tokens=self.config.max_search_batch,
                max_wait_s=self.config.search_batch_wait_ms / 1000,
            )
        return batcher

    def _rank(self, collection_id, index, request, query, accept) -> tuple[list[Hit], list[float]]:
        """The hits, and in hybrid mode the dense ranking's scores as well."""
        set_faiss_threads(self._faiss_threads)  # runs in a worker thread
        top_k, mode = request.top_k, request.mode
        depth = top_k if mode != pb.SEARCH_MODE_HYBRID else max(top_k, FUSION_DEPTH)
        dense = index.search(query, depth, accept) if query is not None else []
        if mode == pb.SEARCH_MODE_DENSE:
            return dense, []
        lexical_index = self.replica.lexical[collection_id]
        chunks = {h.chunk.id: h.chunk for h in dense}
        found = lexical_index.search(request.query_text, depth, accept)
        missing = [i for i, _ in found if i not in chunks]
        chunks.update(index.chunks(missing))
        lexical = [Hit(chunks[i], score) for i, score in found]
        if mode == pb.SEARCH_MODE_LEXICAL:
            return lexical, []
        weights = (request.dense_weight or 1.0, request.lexical_weight or 1.0)
        fused = fuse(dense, lexical, *weights, top_k)
        return fused, [h.score for h in dense[:top_k]]

    async def _write(self, fn, *args):
        """Run a store write and apply it to the indexes, one at a time per replica."""
        async with self._lock:
            result = await asyncio.to_thread(fn, *args)
            await asyncio.to_thread(self._catch_up)
            return result

    async def _write_to(self, tenant: str, name: str, fn, *args):
        """``fn(row, *args)`` as a store write on the collection as the database has it when
        the write runs: read under the write lock, so a collection dropped by a write queued
        before this one is NOT_FOUND here, not a dangling row (the store checks it again in
        the write's own transaction, for drops made through other replicas)."""
        return await self._write(lambda: fn(self._collection(tenant, name), *args))

    def _catch_up(self) -> None:
        dropped = self.replica.catch_up()
        if dropped:
            self._rows = {k: row for k, row in self._rows.items() if row.id not in dropped}

    def _collection(self, tenant: str, name: str) -> CollectionRow:
        """The collection as the database has it now (writes go by this)."""
        check_name(tenant, "tenant")
        check_name(name, "collection")
        return self.store.get_collection(tenant, name)

    def _searched_collection(self, tenant: str, name: str) -> CollectionRow:
        """The collection as this replica knows it (searches go by this)."""
        row = self._rows.get((tenant, name))
        if row is None:
            row = self._rows[(tenant, name)] = self._collection(tenant, name)
        return row

    def _to_pb(self, row: CollectionRow) -> pb.Collection:
        n_chunks, n_docs = self.store.counts(row.id)
        return pb.Collection(
            tenant=row.tenant,
            name=row.name,
            dims=row.dims,
            embedding_model=row.embedding_model,
            chunk_count=n_chunks,
            document_count=n_docs,
            metric=row.metric,
            index_type=row.index_type,
            lexical=row.lexical,
            active_index=index.active if (index := self.replica.dense.get(row.id)) else "",
        )

    # -- RPCs ----------------------------------------------------------------------------------

    @_counted
    async def CreateCollection(
        self, request: pb.CreateCollectionRequest
    ) -> pb.CreateCollectionResponse:
        check_name(request.tenant, "tenant")
        check_name(request.name, "name")
        check_range(request.dims, "dims", 1, self.config.max_dims)
        if not request.embedding_model:
            raise InvalidArgument("must name the embedding model", field="embedding_model")
        metric, index_type = request.metric or "ip", request.index_type or "flat"
        if metric not in METRICS:
            raise InvalidArgument(f"must be one of {sorted(METRICS)}", field="metric")
        if index_type not in INDEX_TYPES:
            raise InvalidArgument(f"must be one of {list(INDEX_TYPES)}", field="index_type")
        wanted = CollectionRow(
            0,
            request.tenant,
            request.name,
            request.dims,
            request.embedding_model,
            metric,
            index_type,
            request.lexical,
        )
        row, _ = await self._write(
            lambda: self.store.create_collection(wanted, exist_ok=request.exist_ok)
        )
        return pb.CreateCollectionResponse(collection=self._to_pb(row))

    @_counted
    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest
    ) -> pb.DeleteCollectionResponse:
        seq = await self._write_to(request.tenant, request.name, self.store.drop_collection)
        return pb.DeleteCollectionResponse(seq=seq)

    @_counted
    async def ListCollections(
        self, request: pb.ListCollectionsRequest
    ) -> pb.ListCollectionsResponse:
        check_name(request.tenant, "tenant")
        rows = self.store.list_collections(request.tenant)
        return pb.ListCollectionsResponse(collections=[self._to_pb(r) for r in rows])

    @_counted
    async def Upsert(self, request: pb.UpsertRequest) -> pb.UpsertResponse:
        self._collection(request.tenant, request.collection)  # NOT_FOUND before the chunks
        check_count(request.chunks, "chunks", "chunk", limit=self.config.max_upsert_chunks)
        new, seen = [], set()
        for i, c in enumerate(request.chunks):
            field = f"chunks[{i}]"
            if not c.doc_id:
                raise InvalidArgument("must not be empty", field=f"{field}.doc_id")
            if not c.chunk_id or c.chunk_id in seen:
                raise InvalidArgument("must be non-empty and unique", field=f"{field}.chunk_id")
            if not c.text.strip():
                raise InvalidArgument("must not be empty", field=f"{field}.text")
            seen.add(c.chunk_id)
            vector = np.asarray(c.vector, dtype=np.float32)
            new.append(NewChunk(c.doc_id, c.chunk_id, c.text, dict(c.metadata), vector))
        seq, replaced = await self._write_to(
            request.tenant, request.collection, self.store.upsert, new
        )
        return pb.UpsertResponse(seq=seq, upserted=len(new), replaced_documents=replaced)

    @_counted
    async def Delete(self, request: pb.DeleteRequest) -> pb.DeleteResponse:
        self._collection(request.tenant, request.collection)
        check_count(request.doc_ids, "doc_ids", "document", limit=self.config.max_delete_documents)
        seq, deleted = await self._write_to(
            request.tenant, request.collection, self.store.delete_documents, list(request.doc_ids)
        )
        return pb.DeleteResponse(seq=seq, deleted=deleted)

    @_counted
    async def Search(self, request: pb.SearchRequest) -> pb.SearchResponse:
        check_name(request.tenant, "tenant")
        check_name(request.collection, "collection")
        check_range(request.top_k, "top_k", 1, self.config.max_top_k)
        mode = request.mode
        if mode not in pb.SearchMode.values():
            raise InvalidArgument(f"unknown search mode {mode}", field="mode")
        accept = metadata_filter(request)
        if request.min_seq > self.applied_seq:
            async with self._lock:
                if request.min_seq > self.applied_seq:
                    await asyncio.to_thread(self._catch_up)
            if request.min_seq > self.applied_seq:
                raise Unavailable(
                    f"replica has applied seq {self.applied_seq}, below min_seq {request.min_seq}"
                )
        row = self._searched_collection(request.tenant, request.collection)
        if mode == pb.SEARCH_MODE_AUTO:
            auto = bool(row.lexical and request.query_text.strip())
            mode = pb.SEARCH_MODE_HYBRID if auto else pb.SEARCH_MODE_DENSE
            resolved = pb.SearchRequest()
            resolved.CopyFrom(request)
            resolved.mode = mode
            request = resolved
        query = None
        if mode != pb.SEARCH_MODE_LEXICAL:
            if not request.query_vector:
                raise InvalidArgument(
                    "is required for dense and hybrid search", field="query_vector"
                )
            query = np.asarray(request.query_vector, dtype=np.float32)
            if query.shape != (row.dims,):
                raise InvalidArgument(
                    f"has {query.shape[0]} dims; collection {row.name!r} has {row.dims}",
                    field="query_vector",
                )
        if mode != pb.SEARCH_MODE_DENSE:
            if not row.lexical:
                raise InvalidArgument(
                    f"collection {row.name!r} has no lexical index (create it with lexical)",
                    field="mode",
                )
            if not request.query_text.strip():
                raise InvalidArgument(
                    "is required for lexical and hybrid search", field="query_text"
                )
        for name in ("dense_weight", "lexical_weight"):
            if getattr(request, name) < 0:
                raise InvalidArgument("must be >= 0 (0 means the default, 1)", field=name)
        async with self._lock:
            index = self.replica.index_for(row.id)
            if index is None:
                raise NotFound(f"collection {request.collection!r} not found")
        if mode == pb.SEARCH_MODE_DENSE and accept is None:
            # Concurrent plain searches of a collection share one FAISS call.
            found, busy_s = await self._batcher(row.id, index).submit_timed(
                [(query, request.top_k)], tokens=1
            )
            hits, busy_ms, dense_scores = found[0], busy_s * 1000, []
        else:
            started = time.perf_counter()
            hits, dense_scores = await asyncio.to_thread(
                self._rank, row.id, index, request, query, accept
            )
            busy_ms = (time.perf_counter() - started) * 1000
        annotate(
            {
                "db.system": "faiss",
                "ragtune.retrieval.top_k": request.top_k,
                "ragtune.retrieval.hits": len(hits),
                "ragtune.retrieval.applied_seq": self.applied_seq,
            }
        )
        return pb.SearchResponse(
            hits=[
                pb.ScoredChunk(
                    chunk=pb.Chunk(
                        chunk_id=h.chunk.chunk_id,
                        doc_id=h.chunk.doc_id,
                        text=h.chunk.text,
                        metadata=h.chunk.metadata,
                    ),
                    score=h.score,
                )
                for h in hits
            ],
            applied_seq=self.applied_seq,
            busy_ms=busy_ms,
            mode=mode,
            metric=row.metric,
            dense_scores=dense_scores,
        )
