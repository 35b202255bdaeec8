"""Read documents to ingest from files, folders or a BEIR corpus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ragtune.v1 import gateway_pb2

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst"}


def _title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return fallback


def from_path(path: Path) -> Iterator[gateway_pb2.Document]:
    """A text/Markdown file is one document (id = its path relative to the folder given);
    a ``.jsonl`` file holds one ``{"_id"|"doc_id", "title", "text", "metadata"}`` per line."""
    if path.is_dir():
        for file in _text_files(path):
            yield _text_document(file, str(file.relative_to(path)))
    elif path.suffix == ".jsonl":
        yield from from_jsonl(path)
    elif path.is_file():
        yield _text_document(path, path.name)
    else:
        raise FileNotFoundError(f"no such file or folder: {path}")


def _text_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)


def _text_document(file: Path, doc_id: str) -> gateway_pb2.Document:
    text = file.read_text(encoding="utf-8")
    return gateway_pb2.Document(
        doc_id=doc_id, title=_title(text, file.stem), text=text, metadata={"source": str(file)}
    )


def from_jsonl(path: Path) -> Iterator[gateway_pb2.Document]:
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            doc_id = str(record.get("_id") or record.get("doc_id") or "")
            if not doc_id:
                raise ValueError(f"{path}:{n}: record has no '_id' or 'doc_id'")
            yield gateway_pb2.Document(
                doc_id=doc_id,
                title=str(record.get("title", "")),
                text=str(record.get("text", "")),
                metadata={str(k): str(v) for k, v in (record.get("metadata") or {}).items()},
            )


def from_beir(folder: Path) -> Iterator[gateway_pb2.Document]:
    corpus = folder / "corpus.jsonl"
    if not corpus.is_file():
        raise FileNotFoundError(f"{folder} is not a BEIR folder: no corpus.jsonl")
    for doc in from_jsonl(corpus):
        if doc.text.strip() or doc.title.strip():
            if not doc.text.strip():
                doc.text = doc.title
            yield doc


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def count(path: Path) -> int:
    """How many documents ``from_path(path)`` yields, cheaply (for progress bars)."""
    if path.is_dir():
        return len(_text_files(path))
    if path.suffix == ".jsonl":
        return count_lines(path)
    return 1 if path.is_file() else 0
