"""BM25 over a collection's chunk texts (bm25s), kept in step with the collection's writes.

bm25s (a maintained, pure-Python BM25 with sparse scoring in NumPy/SciPy) is what
`ragtune eval retrieval` measured best on SciFact with English stopwords and Snowball stemming
(PyStemmer), so the service uses the same analysis. bm25s indexes are immutable: writes mark the
index stale and it is rebuilt before the next lexical search (its cost: docs/retrieval.md,
"Search"); an engine with incremental segments (tantivy) is the upgrade path for large
collections written to continuously.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ragtune.retrieval.store import ChunkRow


class LexicalIndex:
    def __init__(self) -> None:
        self._texts: dict[int, str] = {}  # chunk id -> text
        self._meta: dict[int, dict[str, str]] = {}
        self._by_doc: dict[str, set[int]] = {}
        self._retriever = None
        self._ids: np.ndarray = np.zeros(0, dtype=np.int64)  # row of the bm25s index -> chunk id
        self._stemmer = None

    def replace_documents(self, doc_ids: Iterable[str], rows: Iterable[ChunkRow]) -> None:
        for doc in doc_ids:
            for i in self._by_doc.pop(doc, ()):
                self._texts.pop(i, None)
                self._meta.pop(i, None)
        for r in rows:
            self._texts[r.id], self._meta[r.id] = r.text, r.metadata
            self._by_doc.setdefault(r.doc_id, set()).add(r.id)
        self._retriever = None  # stale: rebuilt before the next search

    def _tokenize(self, texts: list[str]):
        import bm25s
        import Stemmer

        if self._stemmer is None:
            self._stemmer = Stemmer.Stemmer("english")
        return bm25s.tokenize(
            texts, stopwords="en", stemmer=self._stemmer, show_progress=False, return_ids=False
        )

    def _build(self) -> None:
        import bm25s

        self._ids = np.fromiter(self._texts, dtype=np.int64, count=len(self._texts))
        retriever = bm25s.BM25()
        retriever.index(
            self._tokenize([self._texts[int(i)] for i in self._ids]), show_progress=False
        )
        self._retriever = retriever

    def search(
        self, text: str, top_k: int, accept: Callable[[dict[str, str]], bool] | None
    ) -> list[tuple[int, float]]:
        """(chunk id, BM25 score) of the best ``top_k`` chunks with a positive score."""
        if not self._texts:
            return []
        if self._retriever is None:
            self._build()
        tokens = self._tokenize([text])[0]
        if not tokens:
            return []
        mask = None
        if accept is not None:
            mask = np.fromiter(
                (accept(self._meta[int(i)]) for i in self._ids), dtype=bool, count=len(self._ids)
            )
        scores = self._retriever.get_scores(tokens, weight_mask=mask)
        k = min(top_k, int((scores > 0).sum()))
        if k == 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(self._ids[j]), float(scores[j])) for j in best]
