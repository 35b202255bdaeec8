"""FAISS GPU index types against CPU exact search (a GPU and faiss-gpu needed; skipped without).

``gpu_flat`` must return the same top-10 as CPU ``flat``; ``gpu_cagra`` and ``gpu_ivf_pq`` must
reach recall@10 >= 0.95 against exact search, on the benchmark's synthetic set.
"""

from __future__ import annotations

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
    pytest.skip("needs a GPU visible to faiss (faiss-gpu)", allow_module_level=True)

from load_tests.bench_retrieval import clustered  # noqa: E402
from ragtune.retrieval.backend import CollectionIndex  # noqa: E402
from ragtune.retrieval.store import ChunkRow  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def data():
    vectors = clustered(50_000, seed=0)
    rows = [ChunkRow(i + 1, f"d{i}", f"d{i}#0", "", {}, v) for i, v in enumerate(vectors)]
    exact = CollectionIndex(384, "ip", "flat")
    exact.replace_documents([r.doc_id for r in rows], rows)
    queries = clustered(200, seed=1)
    truth = [[h.chunk.id for h in exact.search(q, 10, None)] for q in queries]
    return rows, queries, truth


def top10(index_type: str, data) -> list[list[int]]:
    rows, queries, _ = data
    index = CollectionIndex(384, "ip", index_type)
    assert index.active == index_type  # no fallback: FAISS sees the GPU
    index.replace_documents([r.doc_id for r in rows], rows)
    return [[h.chunk.id for h in hits] for hits in index.search_batch(queries, 10)]


def test_gpu_flat_returns_the_same_top10_as_cpu_flat(data):
    assert top10("gpu_flat", data) == data[2]


@pytest.mark.parametrize("index_type", ["gpu_cagra", "gpu_ivf_pq"])
def test_gpu_ann_recall_at_10(index_type, data):
    got, truth = top10(index_type, data), data[2]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])
    assert recall >= 0.95, recall
