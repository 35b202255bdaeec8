"""What an ingest reads: the files named (folders walked in a fixed order), each classified
before it is read, then the documents read from them, or why a file or record gave none.

Document ids are stable: a file's path relative to the folder given (its name when the file
was named itself), a JSONL record's ``_id``/``doc_id``. Every document from a file carries
metadata ``source`` (the folder's name and the relative path: never an absolute path) and
``type``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ragtune.documents.extract import NoText, Unreadable, extract, file_type
from ragtune.documents.report import Status
from ragtune.v1 import gateway_pb2

SUPPORTED_HELP = ".md .markdown .txt .rst .pdf .html .htm, and .jsonl (one document a line)"


class NothingToIngest(Exception):
    """The sources hold no file at all (an empty folder)."""


@dataclass
class Entry:
    """One file of an ingest."""

    name: str  # as the report shows it: the path given, or the folder given / relative path
    path: Path
    type: str  # markdown, text, rst, pdf, html, jsonl or beir; "" when not supported
    doc_id: str = ""  # the id of a file's one document (JSONL records carry their own)
    source: str = ""  # metadata `source`: relative, never an absolute path
    skip: str = ""  # why it is not read ("" when it is)
    size: int = 0
    mtime_ns: int = 0


@dataclass
class Plan:
    entries: list[Entry]
    source: str  # what the ingest reads, for people (IngestRequest.source)
    beir: bool = False

    @property
    def readable(self) -> list[tuple[int, Entry]]:
        return [(i, e) for i, e in enumerate(self.entries) if not e.skip]

    def expected_documents(self) -> int:
        """Documents the readable files should give: one per file, one per JSONL line."""
        return sum(_count_lines(e.path) if e.type in ("jsonl", "beir") else 1
                   for _, e in self.readable)  # fmt: skip

    def ingest_id(self, collection: str) -> str:
        """The same files (paths, sizes, modification times) into the same collection give the
        same id: running the same command again continues the same bulk ingest."""
        key = [collection] + [[str(e.path.resolve()), e.size, e.mtime_ns] for _, e in self.readable]
        return "cli-" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Problem:
    """Why a file or a JSONL record gave no document."""

    status: Status  # SKIPPED or FAILED
    reason: str


def plan_paths(paths: list[Path]) -> Plan:
    entries: list[Entry] = []
    for path in paths:
        if path.is_dir():
            found = list(_walk(path))
            if not found:
                raise NothingToIngest(f"{path} is empty: no files to ingest")
            entries += found
        elif path.is_file():
            entries.append(_entry(path, str(path), path.name, path.name))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return Plan(entries, ("files:" + ", ".join(p.resolve().name for p in paths))[:256])


def plan_beir(folder: Path) -> Plan:
    corpus = folder / "corpus.jsonl"
    if not corpus.is_file():
        raise FileNotFoundError(f"{folder} is not a BEIR folder: no corpus.jsonl")
    entry = _entry(corpus, str(corpus), "", f"{folder.resolve().name}/corpus.jsonl")
    entry.type = "beir"
    return Plan([entry], f"beir:{folder.resolve().name}"[:256], beir=True)


def _walk(folder: Path) -> Iterator[Entry]:
    """Every file under ``folder`` in sorted order; hidden files and folders are listed as
    skipped (a hidden folder as one entry, not read)."""
    base = folder.resolve().name
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        for d in sorted(dirs):
            if d.startswith("."):
                rel = (here / d).relative_to(folder).as_posix()
                yield Entry(f"{folder / rel}/", here / d, "", skip="hidden folder, not read")
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            rel = (here / name).relative_to(folder).as_posix()
            yield _entry(here / name, str(folder / rel), rel, f"{base}/{rel}")


def _entry(path: Path, name: str, doc_id: str, source: str) -> Entry:
    stat = path.stat()
    entry = Entry(name, path, file_type(path), doc_id, source, "", stat.st_size, stat.st_mtime_ns)
    if path.name.startswith("."):
        entry.skip = "hidden file"
    elif not entry.type:
        entry.skip = f"unsupported type ({path.suffix or 'no extension'})"
    elif stat.st_size == 0:
        entry.skip = "empty file"
    return entry


def read(plan: Plan) -> Iterator[tuple[int, gateway_pb2.Document | Problem | None]]:
    """(entry index, document or problem) for every readable entry of ``plan``, in order;
    (entry index, None) once an entry is read to its end."""
    for index, entry in plan.readable:
        yield from _read(index, entry)
        yield index, None


def _read(index: int, entry: Entry) -> Iterator[tuple[int, gateway_pb2.Document | Problem]]:
    if entry.type == "jsonl":
        for item in _jsonl(entry.path):
            yield index, item
    elif entry.type == "beir":
        for item in _jsonl(entry.path):
            if isinstance(item, gateway_pb2.Document) and not item.text.strip():
                if not item.title.strip():
                    item = Problem(Status.SKIPPED, f"{item.doc_id}: no title or text")
                else:
                    item.text = item.title
            yield index, item
    else:
        yield index, _file_document(entry)


def _file_document(entry: Entry) -> gateway_pb2.Document | Problem:
    try:
        found = extract(entry.path, entry.type)
    except Unreadable as err:
        return Problem(Status.FAILED, str(err))
    except NoText as err:
        return Problem(Status.SKIPPED, str(err))
    except OSError as err:
        return Problem(Status.FAILED, f"cannot read: {err.strerror or err}")
    return gateway_pb2.Document(
        doc_id=entry.doc_id,
        title=found.title,
        text=found.text,
        metadata={"source": entry.source, "type": entry.type},
    )


def _jsonl(path: Path) -> Iterator[gateway_pb2.Document | Problem]:
    """One ``{"_id"|"doc_id", "title", "text", "metadata"}`` per line."""
    with path.open("rb") as lines:
        for n, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as err:
                yield Problem(Status.FAILED, f"line {n}: not a JSON object ({err})")
                continue
            doc_id = str(record.get("_id") or record.get("doc_id") or "")
            if not doc_id:
                yield Problem(Status.FAILED, f"line {n}: no '_id' or 'doc_id'")
                continue
            yield gateway_pb2.Document(
                doc_id=doc_id,
                title=str(record.get("title") or ""),
                text=str(record.get("text") or ""),
                metadata={str(k): str(v) for k, v in (record.get("metadata") or {}).items()},
            )


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())
