"""Snapshots and recovery: a restarted replica loads the newest snapshot and replays the log;
a writer killed with SIGKILL mid-ingest loses no acknowledged write and leaves nothing half."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ragtune.retrieval.config import RetrievalConfig
from ragtune.retrieval.service import RetrievalService
from ragtune.v1 import retrieval_pb2 as pb
from tests.conftest import run

DIMS = 16
CHUNKS_PER_DOC = 5


def vector(doc: int, part: int) -> list[float]:
    rng = np.random.default_rng(doc * 100 + part)
    v = rng.normal(size=DIMS)
    return (v / np.linalg.norm(v)).tolist()


def chunks(doc: int) -> list[pb.Chunk]:
    return [
        pb.Chunk(chunk_id=f"doc{doc}#{p}", doc_id=f"doc{doc}", text=f"doc {doc} part {p}",
                 vector=vector(doc, p))
        for p in range(CHUNKS_PER_DOC)
    ]  # fmt: skip


def service(url: str, folder: Path) -> RetrievalService:
    return RetrievalService(RetrievalConfig(database_url=url, snapshot_dir=str(folder)))


def test_restart_loads_the_newest_snapshot_then_replays_the_log(database_url, tmp_path, caplog):
    first = service(database_url, tmp_path / "snaps")
    run(first.CreateCollection(pb.CreateCollectionRequest(
        tenant="acme", name="kb", dims=DIMS, embedding_model="m", index_type="hnsw")))  # fmt: skip
    for doc in range(3):
        run(first.Upsert(pb.UpsertRequest(tenant="acme", collection="kb", chunks=chunks(doc))))
    search = pb.SearchRequest(tenant="acme", collection="kb", query_vector=vector(1, 0), top_k=1)
    assert run(first.Search(search)).hits[0].chunk.chunk_id == "doc1#0"  # builds the HNSW graph
    taken = run(first.snapshot())
    assert taken == first.applied_seq and run(first.snapshot()) == 0  # nothing new to write
    # Written after the snapshot: only in the log.
    run(first.Upsert(pb.UpsertRequest(tenant="acme", collection="kb", chunks=chunks(7))))
    run(first.Delete(pb.DeleteRequest(tenant="acme", collection="kb", doc_ids=["doc1"])))

    with caplog.at_level(logging.INFO):
        second = service(database_url, tmp_path / "snaps")
    assert f"from the snapshot at seq {taken}" in caplog.text
    assert second.applied_seq == first.applied_seq
    found = {h.chunk.doc_id for h in run(second.Search(
        pb.SearchRequest(tenant="acme", collection="kb", query_vector=vector(7, 0), top_k=20))).hits}  # fmt: skip
    assert found == {"doc0", "doc2", "doc7"}


WRITER = """
import sys
sys.path[:0] = {paths!r}
from tests.unit.test_retrieval_durability import chunks, service, DIMS
from tests.conftest import run
from ragtune.v1 import retrieval_pb2 as pb
from pathlib import Path
svc = service({url!r}, Path({folder!r}))
run(svc.CreateCollection(pb.CreateCollectionRequest(tenant="acme", name="kb", dims=DIMS,
                                                    embedding_model="m", exist_ok=True)))
for doc in range(100000):
    run(svc.Upsert(pb.UpsertRequest(tenant="acme", collection="kb", chunks=chunks(doc))))
    print(doc, flush=True)  # acknowledged
    if doc % 25 == 0:
        run(svc.snapshot())
"""


def test_sigkill_mid_ingest_loses_no_acknowledged_write(database_url, tmp_path):
    folder = tmp_path / "snaps"
    repo = str(Path(__file__).resolve().parents[2])
    script = WRITER.format(paths=[repo, f"{repo}/services"], url=database_url, folder=str(folder))
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    deadline = time.monotonic() + 120
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        line = writer.stdout.readline()
        if not line:
            break
        acknowledged.append(int(line))
    os.kill(writer.pid, signal.SIGKILL)  # mid-ingest: it was writing the next document
    writer.wait()
    assert len(acknowledged) >= 60, "the writer did not get going"
    assert any(p.name.startswith("snapshot-") for p in folder.iterdir())

    restarted = service(database_url, folder)
    hits = run(restarted.Search(pb.SearchRequest(
        tenant="acme", collection="kb", query_vector=vector(0, 0), top_k=1000))).hits  # fmt: skip
    parts: dict[str, set[str]] = {}
    for h in hits:
        parts.setdefault(h.chunk.doc_id, set()).add(h.chunk.chunk_id)
    for doc in acknowledged:  # every acknowledged document, whole
        assert parts.get(f"doc{doc}") == {f"doc{doc}#{p}" for p in range(CHUNKS_PER_DOC)}
    for doc_id, got in parts.items():  # anything else is whole or absent, never half
        assert len(got) == CHUNKS_PER_DOC, doc_id
    assert set(parts) - {f"doc{d}" for d in acknowledged} <= {f"doc{acknowledged[-1] + 1}"}
