"""Documents to ingest: files, folders, JSONL and BEIR corpora read into ``Document``s
(``reading``, ``extract``), sent to the gateway as one resumable bulk ingest (``upload``), and
a report of what became of every file (``report``); ``command`` is ``ragtune ingest``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ragtune.documents.reading import Problem, plan_beir, plan_paths, read
from ragtune.documents.report import Status
from ragtune.v1 import gateway_pb2


def from_path(path: Path) -> Iterator[gateway_pb2.Document]:
    """The documents of a file or folder (a folder's files by relative path; a ``.jsonl``
    file's records); unsupported, hidden and empty files are passed over, an unreadable one
    raises ``ValueError``."""
    return _documents(plan_paths([path]))


def from_beir(folder: Path) -> Iterator[gateway_pb2.Document]:
    """The documents of a BEIR folder's ``corpus.jsonl`` (records without text take their
    title as text; records with neither are passed over)."""
    return _documents(plan_beir(folder))


def _documents(plan) -> Iterator[gateway_pb2.Document]:
    for index, item in read(plan):
        if isinstance(item, Problem):
            if item.status == Status.FAILED:
                raise ValueError(f"{plan.entries[index].name}: {item.reason}")
        elif item is not None:
            yield item
