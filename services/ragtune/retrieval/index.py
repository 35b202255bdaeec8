"""In-memory FAISS index of one collection: derived state, rebuilt from the store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import faiss
import numpy as np

from ragtune.retrieval.store import ChunkRow


@dataclass(frozen=True)
class Hit:
    chunk: ChunkRow
    score: float


class CollectionIndex:
    """Exact inner-product search (vectors are normalised, so scores are cosines).

    FAISS ids are the chunks' database ids, so deletes and filters map one-to-one.
    """

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dims))
        self._chunks: dict[int, ChunkRow] = {}
        self._by_doc: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return self._index.ntotal

    def replace_documents(self, doc_ids: Iterable[str], rows: Iterable[ChunkRow]) -> None:
        """Drop every chunk of ``doc_ids``, then add ``rows`` (their current chunks)."""
        stale = [i for d in doc_ids for i in self._by_doc.pop(d, ())]
        if stale:
            self._index.remove_ids(np.asarray(stale, dtype=np.int64))
            for i in stale:
                del self._chunks[i]
        rows = list(rows)
        if not rows:
            return
        vectors = np.stack([r.vector for r in rows]).astype(np.float32)
        ids = np.asarray([r.id for r in rows], dtype=np.int64)
        self._index.add_with_ids(vectors, ids)
        for r in rows:
            self._chunks[r.id] = r
            self._by_doc.setdefault(r.doc_id, set()).add(r.id)

    def search(self, query: np.ndarray, top_k: int, filter: Mapping[str, str]) -> list[Hit]:
        if not self._chunks:
            return []
        params = None
        if filter:
            allowed = [
                i
                for i, c in self._chunks.items()
                if all(c.metadata.get(k) == v for k, v in filter.items())
            ]
            if not allowed:
                return []
            params = faiss.SearchParameters(
                sel=faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            )
        k = min(top_k, len(self._chunks))
        scores, ids = self._index.search(query.reshape(1, -1).astype(np.float32), k, params=params)
        return [
            Hit(self._chunks[int(i)], float(s))
            for s, i in zip(scores[0], ids[0], strict=True)
            if i >= 0
        ]
