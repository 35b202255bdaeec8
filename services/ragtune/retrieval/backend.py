"""In-memory FAISS indexes of one collection: derived state, rebuilt from the store.

Every collection keeps an exact index (flat, with the chunks' database ids as FAISS ids). It
answers filtered searches, so a filter returns exactly the matching chunks whatever the index
type, and it is the whole story for ``flat``. ANN types add a second index for unfiltered
searches:

- ``hnsw``: HNSW graph (M=32, efSearch=128). HNSW cannot delete, so deleted ids are skipped at
  search time and the graph is rebuilt once they exceed a quarter of it.
- ``ivf_pq``: IVF with product quantisation, its candidates re-ranked exactly with the stored
  vectors (refinement), so recall stays high at PQ's memory cost. It is trained once the
  collection holds enough vectors; until then the exact index serves.
- ``gpu_*``: the GPU versions (flat, IVF-PQ, CAGRA) when FAISS sees a GPU, rebuilt from the
  vectors after changes; without a GPU the CPU counterpart serves and the reason is logged.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import faiss
import numpy as np

from ragtune.retrieval.store import ChunkRow

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivf_pq", "gpu_flat", "gpu_ivf_pq", "gpu_cagra")
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
CPU_COUNTERPART = {"gpu_flat": "flat", "gpu_ivf_pq": "ivf_pq", "gpu_cagra": "hnsw"}


@dataclass(frozen=True)
class Hit:
    chunk: ChunkRow
    score: float


@dataclass(frozen=True)
class AnnSettings:
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 200
    ivf_nprobe: int = 64
    ivf_min_train: int = 20_000  # vectors before IVF-PQ is trained
    refine_factor: int = 10  # IVF-PQ candidates re-ranked exactly, per result wanted


def gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


class CollectionIndex:
    def __init__(
        self,
        dims: int,
        metric: str = "ip",
        index_type: str = "flat",
        settings: AnnSettings | None = None,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}")
        if index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {index_type!r}")
        self.dims, self.metric, self.settings = dims, metric, settings or AnnSettings()
        self.index_type = index_type
        self._kind = index_type
        if index_type.startswith("gpu_") and gpu_count() == 0:
            self._kind = CPU_COUNTERPART[index_type]
            log.warning("index %s: FAISS sees no GPU, serving %s instead", index_type, self._kind)
        self._exact = faiss.IndexIDMap2(faiss.IndexFlat(dims, METRICS[metric]))
        self._chunks: dict[int, ChunkRow] = {}
        self._by_doc: dict[str, set[int]] = {}
        self._ann: faiss.Index | None = None
        self._ann_dirty = False  # GPU indexes and HNSW rebuilds: rebuilt before the next search
        self._deleted: set[int] = set()  # ids still in the HNSW graph but gone
        # Searches run in worker threads (batched) while the log is applied: one at a time.
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._chunks)

    def chunks(self, ids: Iterable[int]) -> dict[int, ChunkRow]:
        return {i: self._chunks[i] for i in ids if i in self._chunks}

    @property
    def active(self) -> str:
        """The index serving unfiltered searches, and why when it is not the one asked for."""
        if self._kind == "ivf_pq" and self._ann is None:
            return f"flat (ivf_pq trains at {self.settings.ivf_min_train} vectors)"
        if self._kind != self.index_type:
            return f"{self._kind} (no GPU for {self.index_type})"
        return self._kind

    # -- writes ----------------------------------------------------------------------------------

    def replace_documents(self, doc_ids: Iterable[str], rows: Iterable[ChunkRow]) -> None:
        """Drop every chunk of ``doc_ids``, then add ``rows`` (their current chunks)."""
        with self._lock:
            self._replace(doc_ids, rows)

    def _replace(self, doc_ids: Iterable[str], rows: Iterable[ChunkRow]) -> None:
        stale = [i for d in doc_ids for i in self._by_doc.pop(d, ())]
        if stale:
            ids = np.asarray(stale, dtype=np.int64)
            self._exact.remove_ids(ids)
            for i in stale:
                del self._chunks[i]
            self._remove_from_ann(ids)
        rows = list(rows)
        if rows:
            vectors = np.stack([r.vector for r in rows]).astype(np.float32)
            ids = np.asarray([r.id for r in rows], dtype=np.int64)
            self._exact.add_with_ids(vectors, ids)
            for r in rows:
                self._chunks[r.id] = r
                self._by_doc.setdefault(r.doc_id, set()).add(r.id)
            self._add_to_ann(vectors, ids)

    # -- snapshots -------------------------------------------------------------------------------

    def export(self) -> tuple[list[ChunkRow], bytes | None]:
        """Its chunks, and its ANN index serialised when it has a CPU one that is current."""
        with self._lock:
            current = self._ann is not None and not self._ann_dirty and not self._deleted
            ann = None
            if current and not isinstance(self._ann, _GpuIndex):
                ann = faiss.serialize_index(self._ann).tobytes()
            return list(self._chunks.values()), ann

    def restore(self, rows: list[ChunkRow], ann: bytes | None) -> None:
        """Load exported state into this (empty) index; an ANN index not given is rebuilt."""
        if rows:
            vectors = np.stack([r.vector for r in rows]).astype(np.float32)
            self._exact.add_with_ids(vectors, np.asarray([r.id for r in rows], dtype=np.int64))
        for r in rows:
            self._chunks[r.id] = r
            self._by_doc.setdefault(r.doc_id, set()).add(r.id)
        if ann is not None and self._kind in ("hnsw", "ivf_pq"):
            self._ann = faiss.deserialize_index(np.frombuffer(ann, dtype=np.uint8))
        elif self._kind != "flat" and (
            self._kind != "ivf_pq" or len(rows) >= self.settings.ivf_min_train
        ):
            self._ann_dirty = True

    def _remove_from_ann(self, ids: np.ndarray) -> None:
        if self._ann is None:
            return
        if self._kind == "hnsw":
            self._deleted.update(int(i) for i in ids)
            if len(self._deleted) * 4 > self._ann.ntotal:
                self._ann_dirty = True
        elif self._kind == "ivf_pq":
            self._ann.remove_ids(ids)
        else:
            self._ann_dirty = True

    def _add_to_ann(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if self._kind == "flat":
            return
        if self._ann is not None and not self._kind.startswith("gpu_"):
            self._ann.add_with_ids(vectors, ids)
        elif self._kind != "ivf_pq" or len(self._chunks) >= self.settings.ivf_min_train:
            self._ann_dirty = True  # built (IVF-PQ: trained) before the next search

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter(self._chunks, dtype=np.int64, count=len(self._chunks))
        vectors = np.stack([self._chunks[int(i)].vector for i in ids]).astype(np.float32)
        return vectors, ids

    def _rebuild_ann(self) -> None:
        self._ann_dirty, self._deleted = False, set()
        if not self._chunks:
            self._ann = None
            return
        vectors, ids = self._all_vectors()
        metric, s = METRICS[self.metric], self.settings
        if self._kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dims, s.hnsw_m, metric)
            hnsw.hnsw.efConstruction = s.hnsw_ef_construction
            hnsw.hnsw.efSearch = s.hnsw_ef_search
            self._ann = faiss.IndexIDMap2(hnsw)
            self._ann.add_with_ids(vectors, ids)
        elif self._kind == "ivf_pq":
            if len(ids) < s.ivf_min_train:
                self._ann = None
                return
            nlist = int(4 * math.sqrt(len(ids)))
            pq_m = next(m for m in (48, 32, 24, 16, 12, 8, 4, 2, 1) if self.dims % m == 0)
            ivf = faiss.IndexIVFPQ(
                faiss.IndexFlat(self.dims, metric), self.dims, nlist, pq_m, 8, metric
            )
            ivf.train(vectors)
            ivf.nprobe = s.ivf_nprobe
            ivf.add_with_ids(vectors, ids)
            self._ann = ivf
            log.info("ivf_pq trained on %d vectors (nlist=%d, m=%d)", len(ids), nlist, pq_m)
        else:
            self._ann = _GpuIndex(self._kind, self.dims, metric, vectors, ids)

    # -- search ----------------------------------------------------------------------------------

    def search(
        self, query: np.ndarray, top_k: int, accept: Callable[[dict[str, str]], bool] | None
    ) -> list[Hit]:
        """The best ``top_k`` chunks; with ``accept``, exactly among the chunks it accepts."""
        if accept is None:
            return self.search_batch(query.reshape(1, -1), top_k)[0]
        with self._lock:
            allowed = [i for i, c in self._chunks.items() if accept(c.metadata)]
            if not allowed:
                return []
            params = faiss.SearchParameters(
                sel=faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            )
            query = query.reshape(1, -1).astype(np.float32)
            scores, ids = self._exact.search(query, min(top_k, len(allowed)), params=params)
            return self._hits(scores[0], ids[0])

    def search_batch(self, queries: np.ndarray, top_k: int) -> list[list[Hit]]:
        """Unfiltered search of several queries in one FAISS call (queries that arrived
        together): one scan of the vectors serves them all."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._lock:
            if not self._chunks:
                return [[] for _ in queries]
            if self._ann_dirty:
                self._rebuild_ann()
            if self._ann is None:
                scores, ids = self._exact.search(queries, min(top_k, len(self._chunks)))
                return [self._hits(s, i) for s, i in zip(scores, ids, strict=True)]
            if self._kind == "ivf_pq":
                return self._refined(queries, top_k)
            k = min(top_k + len(self._deleted), self._ann.ntotal)
            scores, ids = self._ann.search(queries, k)
            results = []
            for row_scores, row_ids in zip(scores, ids, strict=True):
                kept = [(s, i) for s, i in zip(row_scores, row_ids, strict=True)
                        if i not in self._deleted][:top_k]  # fmt: skip
                results.append(self._hits(*zip(*kept, strict=True)) if kept else [])
            return results

    def _refined(self, queries: np.ndarray, top_k: int) -> list[list[Hit]]:
        k = min(top_k * self.settings.refine_factor, self._ann.ntotal)
        _, ids = self._ann.search(queries, k)
        results = []
        for query, row in zip(queries, ids, strict=True):
            candidates = [int(i) for i in row if i >= 0]
            vectors = np.stack([self._chunks[i].vector for i in candidates]).astype(np.float32)
            if self.metric == "ip":
                scores = vectors @ query
            else:
                scores = -((vectors - query) ** 2).sum(axis=1)
            order = np.argsort(-scores, kind="stable")[:top_k]
            results.append([Hit(self._chunks[candidates[j]], float(scores[j])) for j in order])
        return results

    def _hits(self, scores: Iterable[float], ids: Iterable[int]) -> list[Hit]:
        sign = 1.0 if self.metric == "ip" else -1.0  # l2: higher is better, as for ip
        return [
            Hit(self._chunks[int(i)], sign * float(s))
            for s, i in zip(scores, ids, strict=True)
            if i >= 0 and int(i) in self._chunks
        ]


class _GpuIndex:
    """A FAISS GPU index over all vectors, with its row → chunk id mapping (GPU indexes keep
    no ids of their own and cannot delete: they are rebuilt after changes)."""

    def __init__(self, kind: str, dims: int, metric: int, vectors: np.ndarray, ids: np.ndarray):
        self._resources = faiss.StandardGpuResources()
        if kind == "gpu_flat":
            config = faiss.GpuIndexFlatConfig()
            self._index = faiss.GpuIndexFlat(self._resources, dims, metric, config)
        elif kind == "gpu_ivf_pq":
            nlist = max(1, int(4 * math.sqrt(len(ids))))
            pq_m = next(m for m in (48, 32, 24, 16, 8, 4, 2, 1) if dims % m == 0)
            self._index = faiss.GpuIndexIVFPQ(self._resources, dims, nlist, pq_m, 8, metric)
            self._index.train(vectors)
            self._index.nprobe = 64
        else:
            self._index = faiss.GpuIndexCagra(self._resources, dims, metric)
            self._index.train(vectors)
        if kind != "gpu_cagra":
            self._index.add(vectors)
        self._ids = ids
        self.ntotal = len(ids)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self._index.search(query, k)
        return scores, np.where(rows >= 0, self._ids[np.clip(rows, 0, None)], -1)
