"""``ragtune ingest`` against the running platform: a mixed folder accounted for file by file,
and a bulk ingest that is interrupted, then resumed, and only then marked complete."""

from __future__ import annotations

import json

import pytest

from ragtune import cli
from ragtune.documents.upload import Sender
from ragtune.v1 import gateway_pb2
from tests.unit.test_documents import write_mixed_folder

pytestmark = pytest.mark.integration


def ingest(platform, *args: str) -> int:
    return cli.main(["ingest", *args, "--target", platform.target, "--api-key", platform.acme_key])


def collection(platform, name: str) -> gateway_pb2.GetCollectionResponse:
    with platform.client() as client:
        request = gateway_pb2.GatewayCollectionRequest(name=name)
        return client.stub.GetCollection(request, metadata=client.metadata, timeout=30)


def test_a_mixed_folder_ingests_what_it_can_and_names_the_rest(platform, tmp_path, capsys):
    folder = write_mixed_folder(tmp_path / "handbook")
    assert ingest(platform, str(folder), "--collection", "mixed", "--json") == 1  # one failed
    report = json.loads(capsys.readouterr().out)
    status = {f["path"].removeprefix(f"{folder}/"): (f["status"], f["reason"])
              for f in report["files"]}  # fmt: skip
    assert {name for name, (s, _) in status.items() if s == "ingested"} == {
        "intro.md", "notes.txt", "guides/setup.rst", "manual.pdf", "page.html"}  # fmt: skip
    assert status["logo.png"] == ("skipped", "unsupported type (.png)")
    assert status["legacy.txt"][0] == "failed" and "not UTF-8" in status["legacy.txt"][1]
    assert report["complete"] and report["counts"]["failed"] == 1
    stored = collection(platform, "mixed")
    assert stored.collection.document_count == 5
    assert stored.last_ingest.complete and stored.last_ingest.source == "files:handbook"

    with platform.client() as client:
        reply = client.answer("How long does the Kestrel battery last?", path="rag",
                              collection="mixed", filter={"type": "pdf"})  # fmt: skip
    assert reply.citations
    for citation in reply.citations:
        assert citation.doc_id == "manual.pdf"
        assert citation.metadata["source"] == "handbook/manual.pdf"
        assert citation.metadata["title"] == "Kestrel field manual"
        assert str(tmp_path) not in str(citation)


def test_an_interrupted_bulk_ingest_resumes_and_completes(platform, tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(
        json.dumps({"_id": f"r{i}", "title": f"Record {i}", "text": f"Fact number {i} is {i * i}."})
        + "\n" for i in range(60)))  # fmt: skip
    args = ("--beir", str(tmp_path), "--collection", "resumable", "--batch", "8")
    settled = 0
    real_settle = Sender._settle

    def interrupt_on_the_third(self):
        nonlocal settled
        settled += 1
        if settled == 3:
            raise KeyboardInterrupt
        real_settle(self)

    monkeypatch.setattr(Sender, "_settle", interrupt_on_the_third)
    assert ingest(platform, *args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ragtune ingest: interrupted: 16 documents stored in 'resumable'")
    assert err[-1].endswith("run the same command again to resume")
    run = collection(platform, "resumable").last_ingest
    assert not run.complete and 16 <= run.documents < 60
    monkeypatch.undo()

    base = run.ingest_id.removesuffix(".0.16")  # <base>.<offset>.<documents in flight>
    assert ingest(platform, *args, "--json") == 0
    out = capsys.readouterr()
    assert f"resuming {base}: {run.documents} documents already stored" in out.err
    report = json.loads(out.out)
    resumed_at = max(0, run.documents - 16)  # the window of 2 calls of 8 is sent again
    assert (report["unchanged_documents"], report["documents"]) == (resumed_at, 60 - resumed_at)
    assert report["files"][0]["status"] == "ingested"
    stored = collection(platform, "resumable")
    assert stored.last_ingest.ingest_id == f"{base}.{resumed_at}.16"
    assert stored.last_ingest.complete and stored.last_ingest.source == f"beir:{tmp_path.name}"
    assert stored.collection.document_count == 60

    assert ingest(platform, *args, "--json") == 0  # the same again: nothing to send
    out = capsys.readouterr()
    assert json.loads(out.out)["files"][0]["status"] == "unchanged"
    assert "nothing to send" in out.err
