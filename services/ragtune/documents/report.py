"""What became of every file of an ingest: a table for people, JSON for programs, an exit code."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    INGESTED = "ingested"  # its documents are stored (sent in this run)
    UNCHANGED = "unchanged"  # stored by an earlier, interrupted or complete, run of this ingest
    SKIPPED = "skipped"  # not read: unsupported type, hidden, empty, or no text in it
    FAILED = "failed"  # of a supported type, but unreadable, or the gateway rejected it
    PENDING = "pending"  # not finished: the run stopped before it


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    every file of a supported type is stored (ingested now, or unchanged since this same
       ingest ran); files of other types are listed as skipped
  1    a file or document failed (the report names it and says why), or the gateway stopped
       the run (run the same command again to resume)
  2    usage: no such file or folder, bad arguments
  3    nothing to ingest: an empty folder, or no file of a supported type with text in it
  130  interrupted (Ctrl-C); run the same command again to resume"""

LIST_ALL_UP_TO = 50  # files; above that the table lists only the files that need a look


@dataclass
class FileResult:
    path: str
    type: str
    status: Status = Status.PENDING
    reason: str = ""
    documents: int = 0  # documents read from it
    stored: int = 0  # of which the gateway acknowledged in this run
    unchanged: int = 0  # of which an earlier run of the same ingest stored
    failed: list[str] = field(default_factory=list)  # why documents or records failed
    skipped: list[str] = field(default_factory=list)  # why records gave nothing to ingest
    read_all: bool = False  # every document of it was read

    def settle(self) -> None:
        if self.status == Status.SKIPPED and not self.documents:
            return  # decided before reading
        done = self.stored + self.unchanged
        if not self.read_all and not self.failed:
            self.status = Status.PENDING
            self.reason = f"{done} documents stored when the run stopped"
        elif self.failed:
            self.status = Status.FAILED
            total = self.documents + len(self.failed) + len(self.skipped)
            self.reason = self.failed[0] if total == 1 else (
                f"{len(self.failed)} of {total} records failed; first: {self.failed[0]}")  # fmt: skip
        elif not self.documents:
            self.status = Status.SKIPPED
            self.reason = self.skipped[0] if len(self.skipped) == 1 else "no records"
        elif done < self.documents:
            self.status = Status.PENDING
            self.reason = f"{done} of {self.documents} documents stored when the run stopped"
        else:
            self.status = Status.INGESTED if self.stored else Status.UNCHANGED
            if self.skipped:
                self.reason = f"{len(self.skipped)} records without text skipped"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "status": str(self.status),
                "reason": self.reason, "documents": self.documents}  # fmt: skip


@dataclass
class Report:
    collection: str
    files: list[FileResult]
    ingest_id: str = ""
    source: str = ""
    supported: str = ""
    resumed_from: int = 0  # documents an earlier run of this ingest had stored
    chunks: int = 0  # chunks written in this run
    seq: int = 0
    complete: bool = False  # the gateway marked the run complete

    def settle(self) -> None:
        for result in self.files:
            result.settle()

    def counts(self) -> dict[str, int]:
        seen = Counter(f.status for f in self.files)
        return {str(status): seen[status] for status in Status}

    @property
    def stored(self) -> int:
        return sum(f.stored for f in self.files)

    @property
    def unchanged(self) -> int:
        return sum(f.unchanged for f in self.files)

    def exit_code(self) -> int:
        counts = self.counts()
        if counts[Status.FAILED] or counts[Status.PENDING]:
            return EXIT_FAILED
        if not (counts[Status.INGESTED] or counts[Status.UNCHANGED]):
            return EXIT_NOTHING
        return EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "ingest_id": self.ingest_id,
            "source": self.source,
            "complete": self.complete,
            "exit_code": self.exit_code(),
            "counts": self.counts(),
            "documents": self.stored,
            "unchanged_documents": self.unchanged,
            "resumed_from": self.resumed_from,
            "chunks": self.chunks,
            "seq": self.seq,
            "files": [f.as_dict() for f in self.files],
        }

    def table(self, *, every_file: bool = False) -> str:
        shown = [f for f in self.files if every_file or len(self.files) <= LIST_ALL_UP_TO
                 or f.status not in (Status.INGESTED, Status.UNCHANGED)]  # fmt: skip
        rows = [("STATUS", "TYPE", "DOCS", "FILE", "REASON")]
        rows += [(str(f.status), f.type or "-", str(f.documents), f.path, f.reason) for f in shown]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            f"{s:<{widths[0]}}  {t:<{widths[1]}}  {d:>{widths[2]}}  {p:<{widths[3]}}  {r}".rstrip()
            for s, t, d, p, r in rows
        ]
        if len(shown) < len(self.files):
            lines.append(f"({len(self.files) - len(shown)} files stored and not listed; "
                         "--json or --every-file lists them)")  # fmt: skip
        if any(f.reason.startswith("unsupported type") for f in self.files):
            lines.append(f"(reads {self.supported})")
        counts = ", ".join(f"{n} {status}" for status, n in self.counts().items() if n)
        lines.append(f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}: {counts}")
        stored = f"stored {self.stored} documents as {self.chunks} chunks in {self.collection!r}"
        if not (self.stored or self.unchanged):
            stored = f"nothing stored in {self.collection!r}"
        if self.unchanged:
            stored += f"; {self.unchanged} documents unchanged"
        if self.ingest_id:
            stored += f" (ingest {self.ingest_id}{', complete' if self.complete else ''})"
        lines.append(stored)
        return "\n".join(lines)
