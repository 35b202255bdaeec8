"""Reading files to ingest and accounting for each, against an in-memory gateway: types,
reasons, metadata, exit codes, calls in flight, rejected documents and resumable runs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import pytest

from ragtune import documents
from ragtune.documents.command import Options, ingest
from ragtune.documents.reading import plan_paths, read
from ragtune.resources import DEMO_CORPUS
from ragtune.v1 import gateway_pb2, retrieval_pb2


class RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Future:
    def __init__(self, gateway: FakeGateway, request: gateway_pb2.IngestRequest) -> None:
        self.gateway, self.request = gateway, request
        gateway.outstanding += 1
        gateway.most_in_flight = max(gateway.most_in_flight, gateway.outstanding)
        # eager: the gateway finishes every call at once, answered or not (the worst case
        # for resuming: it counted calls the client never heard back from)
        self.reply = gateway.ingest(request) if gateway.eager else None
        self.interrupted = False

    def result(self) -> gateway_pb2.IngestResponse:
        self.gateway.outstanding -= 1
        return self.reply or self.gateway.ingest(self.request)

    def cancel(self) -> bool:
        self.gateway.outstanding -= 1
        if self.gateway.finish_cancelled and not self.interrupted and self.reply is None:
            self.gateway.ingest(self.request)  # the client went away; the gateway went on
        return True


class FakeGateway:
    """Ingest and GetCollection as the gateway answers them: documents stored by id, bulk
    ingests counted by ingest_id and complete after a `final` call."""

    def __init__(self) -> None:
        self.stored: dict[str, gateway_pb2.Document] = {}
        self.calls: list[gateway_pb2.IngestRequest] = []
        self.run: gateway_pb2.IngestRun | None = None
        self.outstanding = self.most_in_flight = 0
        self.fail_with: RpcError | None = None
        self.eager = False
        self.finish_cancelled = False
        self.Ingest = self  # the stub's multi-callable: .future(request, ...)

    def future(self, request, *, metadata, timeout) -> Future:
        assert ("application", "gateway") in metadata
        return Future(self, request)

    def ingest(self, request: gateway_pb2.IngestRequest) -> gateway_pb2.IngestResponse:
        self.calls.append(request)
        if self.fail_with:
            raise self.fail_with
        if request.ByteSize() > 4 * 1024 * 1024:  # a replica's gRPC server's limit
            raise RpcError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Received message larger than max ({request.ByteSize()} vs. 4194304)",
            )
        for i, doc in enumerate(request.documents):
            if "REJECT" in doc.text:
                raise RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"documents[{i}].text: is not allowed"
                )
        for doc in request.documents:
            self.stored[doc.doc_id] = doc
        if self.run is None or self.run.ingest_id != request.ingest_id:
            self.run = gateway_pb2.IngestRun(ingest_id=request.ingest_id, source=request.source)
        self.run.documents += len(request.documents)
        self.run.complete = self.run.complete or request.final
        return gateway_pb2.IngestResponse(
            documents=len(request.documents), chunks=2 * len(request.documents), seq=len(self.calls),
            run=self.run,
        )  # fmt: skip

    def GetCollection(self, request, *, metadata, timeout) -> gateway_pb2.GetCollectionResponse:
        if self.run is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, "collection: not found")
        return gateway_pb2.GetCollectionResponse(
            collection=retrieval_pb2.Collection(name=request.name), last_ingest=self.run
        )


def run_ingest(gateway: FakeGateway, *paths: Path, **options) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = ingest(
        Options("mine", paths=tuple(paths), **options),
        gateway,
        metadata=[("application", "gateway")],
        timeout_s=5,
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


def make_pdf(path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Kestrel field manual")
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 10, "The Kestrel battery lasts eleven hours.")
    pdf.add_page()
    pdf.multi_cell(0, 10, "Charging takes ninety minutes.")
    pdf.output(str(path))


def write_mixed_folder(folder: Path) -> Path:
    """Markdown, text, reStructuredText, PDF and HTML files, an image, a Latin-1 .txt, an
    empty file, a hidden file and a hidden folder."""
    (folder / "guides").mkdir(parents=True)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "intro.md").write_text("# Welcome aboard\n\nThe Lyon office opened in 2019.\n")
    (folder / "notes.txt").write_text("Plain notes about the Kestrel.\n")
    (folder / "guides" / "setup.rst").write_text("Setting up\n==========\n\nPlug it in.\n")
    make_pdf(folder / "manual.pdf")
    (folder / "page.html").write_bytes(
        b"<html><head><meta charset='iso-8859-1'><title>Caf\xe9 hours</title>"
        b"<style>p{color:red}</style><script>var x = 1;</script></head><body>"
        b"<nav>Home | About</nav><h1>Opening hours</h1><p>Open <b>daily</b> from 8.</p>"
        b"<ul><li>Mon</li><li>Tue</li></ul><a href='https://x.example'>more</a></body></html>"
    )
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (folder / "legacy.txt").write_bytes("caf\xe9 in Latin-1\n".encode("latin-1"))
    (folder / "blank.md").write_bytes(b"")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    return folder


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    return write_mixed_folder(tmp_path / "handbook")


def test_a_mixed_folder_is_accounted_for_file_by_file(mixed):
    gateway = FakeGateway()
    code, out, _ = run_ingest(gateway, mixed, json=True)
    report = json.loads(out)
    files = {Path(f["path"]).relative_to(mixed).as_posix(): f for f in report["files"]}
    status = {name: f["status"] for name, f in files.items()}
    assert status == {
        ".git": "skipped",
        ".DS_Store": "skipped",
        "blank.md": "skipped",
        "guides/setup.rst": "ingested",
        "intro.md": "ingested",
        "legacy.txt": "failed",
        "logo.png": "skipped",
        "manual.pdf": "ingested",
        "notes.txt": "ingested",
        "page.html": "ingested",
    }
    assert files[".git"]["reason"] == "hidden folder, not read"
    assert files[".DS_Store"]["reason"] == "hidden file"
    assert files["blank.md"]["reason"] == "empty file"
    assert files["logo.png"]["reason"] == "unsupported type (.png)"
    assert files["legacy.txt"]["reason"].startswith("not UTF-8 text (byte 0xe9 at offset 3)")
    assert files["manual.pdf"] == {"path": str(mixed / "manual.pdf"), "type": "pdf",
                                   "status": "ingested", "reason": "", "documents": 1}  # fmt: skip
    assert report["counts"] == {"ingested": 5, "unchanged": 0, "skipped": 4, "failed": 1,
                                "pending": 0}  # fmt: skip
    assert (report["documents"], report["chunks"], report["complete"]) == (5, 10, True)
    assert code == report["exit_code"] == 1  # something failed
    assert sorted(gateway.stored) == ["guides/setup.rst", "intro.md", "manual.pdf", "notes.txt",
                                      "page.html"]  # fmt: skip


def test_the_table_names_every_problem_file_with_its_reason(mixed):
    code, out, _ = run_ingest(FakeGateway(), mixed)
    assert code == 1
    rows = {line.split()[3].rsplit("/", 1)[-1]: line for line in out.splitlines()[1:11]}
    assert rows["logo.png"].split()[:2] == ["skipped", "-"]
    assert "unsupported type (.png)" in rows["logo.png"]
    assert rows["legacy.txt"].split()[:2] == ["failed", "text"]
    assert "(reads .md .markdown .txt .rst .pdf .html .htm" in out
    assert "10 files: 5 ingested, 4 skipped, 1 failed" in out
    assert "stored 5 documents as 10 chunks in 'mine'" in out


def test_metadata_is_relative_typed_and_titled(mixed):
    gateway = FakeGateway()
    run_ingest(gateway, mixed)
    docs = gateway.stored
    for doc in docs.values():
        assert not Path(doc.metadata["source"]).is_absolute()
        assert str(mixed) not in str(doc)
        assert doc.metadata["source"] == f"handbook/{doc.doc_id}"
    assert {d: (docs[d].title, docs[d].metadata["type"]) for d in docs} == {
        "intro.md": ("Welcome aboard", "markdown"),
        "notes.txt": ("notes", "text"),
        "guides/setup.rst": ("Setting up", "rst"),
        "manual.pdf": ("Kestrel field manual", "pdf"),
        "page.html": ("Café hours", "html"),
    }
    assert "eleven hours" in docs["manual.pdf"].text and "ninety minutes" in docs["manual.pdf"].text
    html = docs["page.html"].text
    assert html.startswith("# Opening hours") and "Open **daily** from 8." in html
    assert "- Mon" in html and "more" in html
    assert not any(s in html for s in ("var x", "color:red", "Home | About", "https://"))


def test_a_binary_file_named_directly_is_skipped_by_name(tmp_path):
    blob = tmp_path / "photo.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    code, out, _ = run_ingest(FakeGateway(), blob)
    assert code == 3
    assert out.splitlines()[1].split(None, 3) == [
        "skipped",
        "-",
        "0",
        f"{blob}  unsupported type (.bin)",
    ]
    assert out.splitlines()[-2:] == ["1 file: 1 skipped", "nothing stored in 'mine'"]


def test_a_binary_file_with_a_text_suffix_fails_by_name(tmp_path):
    blob = tmp_path / "dump.txt"
    blob.write_bytes(b"\xd0\xcf\x11\xe0\x00\x00" * 100)
    gateway = FakeGateway()
    code, out, _ = run_ingest(gateway, blob, json=True)
    (result,) = json.loads(out)["files"]
    assert (code, result["status"], result["reason"]) == (
        1, "failed", "binary content (NUL bytes), not text")  # fmt: skip
    assert gateway.calls == []  # nothing to send: no empty final call, no collection


def test_an_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = run_ingest(FakeGateway(), tmp_path / "empty")
    assert code == 3 and out == ""
    assert err.strip() == f"ragtune ingest: {tmp_path / 'empty'} is empty: no files to ingest"


def test_a_missing_path_is_a_usage_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        run_ingest(FakeGateway(), tmp_path / "nope")


def test_a_damaged_pdf_fails_with_the_reason(tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf")
    code, out, _ = run_ingest(FakeGateway(), tmp_path, json=True)
    (result,) = json.loads(out)["files"]
    assert code == 1 and result["status"] == "failed"
    assert result["reason"].startswith("not a readable PDF (")


def corpus(tmp_path: Path, n: int, bad: dict[int, str] | None = None) -> Path:
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"}) for i in range(n)]
    for i, line in (bad or {}).items():
        lines[i] = line
    path.write_text("\n".join(lines) + "\n")
    return path


def test_calls_overlap_up_to_in_flight_and_the_last_call_is_final(tmp_path):
    gateway = FakeGateway()
    code, _, _ = run_ingest(gateway, corpus(tmp_path, 100), batch=8, in_flight=2)
    assert code == 0 and len(gateway.stored) == 100
    assert gateway.most_in_flight == 2
    assert [c.final for c in gateway.calls] == [False] * 12 + [True]
    assert len(gateway.calls[-1].documents) == 4
    assert {c.ingest_id for c in gateway.calls} == {gateway.run.ingest_id}
    assert gateway.calls[0].source == "files:corpus.jsonl"  # no absolute path leaves the client
    assert gateway.run.complete


def test_a_rejected_record_is_reported_and_the_rest_of_its_batch_stored(tmp_path):
    bad = {5: json.dumps({"_id": "d5", "text": "REJECT me"}), 7: "{not json", 9: '{"text": "x"}'}
    gateway = FakeGateway()
    code, out, _ = run_ingest(gateway, corpus(tmp_path, 20, bad), batch=8, json=True)
    (result,) = json.loads(out)["files"]
    assert code == 1 and result["status"] == "failed" and result["documents"] == 17
    assert result["reason"].startswith("3 of 20 records failed; first: line 8: not a JSON")
    assert len(gateway.stored) == 17 and "d5" not in gateway.stored


def test_calls_stay_under_the_message_limit_and_a_huge_document_fails_alone(tmp_path):
    for i in range(6):  # 6 x 1 MB: more than one call's worth
        (tmp_path / f"part{i}.txt").write_text(f"part {i} " + "x" * 1_000_000)
    (tmp_path / "huge.txt").write_text("y" * 5_000_000)
    gateway = FakeGateway()
    code, out, _ = run_ingest(gateway, tmp_path, json=True)
    files = {Path(f["path"]).name: f for f in json.loads(out)["files"]}
    assert code == 1 and len(gateway.stored) == 6
    assert files["huge.txt"]["status"] == "failed"
    assert files["huge.txt"]["reason"].startswith("too large for one call: Received message")
    assert max(len(c.documents) for c in gateway.calls) == 3


def test_a_gateway_failure_stops_the_run_and_says_how_to_resume(tmp_path):
    gateway = FakeGateway()
    gateway.fail_with = RpcError(grpc.StatusCode.UNAVAILABLE, "embedding: no replica")
    code, out, err = run_ingest(gateway, corpus(tmp_path, 20), batch=8)
    assert code == 1
    assert "pending" in out
    assert err.strip().endswith(
        "the gateway stopped the run: UNAVAILABLE: embedding: no replica; 0 documents stored; "
        "run the same command again to resume"
    )


def test_an_interrupted_run_resumes_and_completes_once(tmp_path, monkeypatch):
    source = corpus(tmp_path, 100)
    gateway = FakeGateway()
    results = 0
    real_result = Future.result

    def interrupt_on_the_fourth(self):
        nonlocal results
        results += 1
        if results == 4:
            raise KeyboardInterrupt
        return real_result(self)

    monkeypatch.setattr(Future, "result", interrupt_on_the_fourth)
    code, out, err = run_ingest(gateway, source, batch=10)
    assert code == 130 and out == ""
    (line,) = err.strip().splitlines()
    assert line == (f"ragtune ingest: interrupted: 30 documents stored in 'mine' (ingest "
                    f"{gateway.run.ingest_id}); run the same command again to resume")  # fmt: skip
    assert not gateway.run.complete and gateway.outstanding == 0
    monkeypatch.undo()

    first = gateway.run.ingest_id
    base = first.removesuffix(".0.20")  # a run's id: <base>.<offset>.<documents in flight>
    assert gateway.run.documents == 30  # the fourth call was in flight, never answered
    code, out, err = run_ingest(gateway, source, batch=10, json=True)
    report = json.loads(out)
    assert code == 0 and gateway.run.complete
    assert err.splitlines()[0] == f"resuming {base}: 30 documents already stored"
    # resumed, as a run of its own, from the gateway's count less the window of calls in
    # flight (2 x 10 documents)
    assert gateway.run.ingest_id == f"{base}.10.20"
    assert gateway.calls[3].documents[0].doc_id == "d10"
    assert (report["unchanged_documents"], report["documents"]) == (10, 90)
    assert report["files"][0]["status"] == "ingested" and len(gateway.stored) == 100

    calls = len(gateway.calls)
    code, out, err = run_ingest(gateway, source, json=True)
    assert code == 0 and len(gateway.calls) == calls  # complete: nothing sent again
    assert json.loads(out)["files"][0]["status"] == "unchanged"
    assert "nothing to send; --force sends it again" in err

    code, _, _ = run_ingest(gateway, source, force=True)
    assert code == 0 and len(gateway.calls) == calls + 2


def test_the_ingest_id_follows_the_files_and_the_collection(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\nalpha\n")
    plan = plan_paths([tmp_path])
    assert plan.ingest_id("x") == plan_paths([tmp_path]).ingest_id("x") != plan.ingest_id("y")
    (tmp_path / "a.md").write_text("# A\n\nalpha, longer\n")
    assert plan_paths([tmp_path]).ingest_id("x") != plan.ingest_id("x")


def test_reading_yields_documents_then_an_end_marker_per_file(mixed):
    plan = plan_paths([mixed / "intro.md", mixed / "logo.png"])
    items = list(read(plan))
    assert [(i, type(x).__name__) for i, x in items] == [(0, "Document"), (0, "NoneType")]


def test_from_path_reads_the_demo_corpus():
    docs = list(documents.from_path(DEMO_CORPUS))
    assert len(docs) == 24 and "faq.md" in {d.doc_id for d in docs}
    assert all(d.metadata["source"].startswith(f"{DEMO_CORPUS.name}/") for d in docs)


@pytest.mark.parametrize("mode", ["lost", "finished", "reordered"])
def test_a_run_interrupted_again_and_again_skips_nothing(tmp_path, monkeypatch, mode):
    """The calls in flight when a run stops are lost, or finished by the gateway anyway, or
    finished except the one the client waited for (the worst case: a gap before stored ones)."""
    source = corpus(tmp_path, 200)
    gateway = FakeGateway()
    gateway.eager = mode == "finished"
    gateway.finish_cancelled = mode == "reordered"
    results = 0
    real_result = Future.result

    def interrupt_every_fifth(self):
        nonlocal results
        results += 1
        if results % 5 == 0:
            self.interrupted = True
            raise KeyboardInterrupt
        return real_result(self)

    monkeypatch.setattr(Future, "result", interrupt_every_fifth)
    codes = []
    for _ in range(12):
        before, calls = set(gateway.stored), len(gateway.calls)
        codes.append(run_ingest(gateway, source, batch=8)[0])
        if len(gateway.calls) > calls:  # a run started from an offset: all before it stored
            offset = int(gateway.calls[calls].ingest_id.split(".")[1])
            assert {f"d{i}" for i in range(offset)} <= before
    assert codes[:3] == [130, 130, 130] and codes[-1] == 0
    assert sorted(gateway.stored) == sorted(f"d{i}" for i in range(200))
    assert gateway.run.complete
