"""Send documents to the gateway's Ingest as one bulk ingest, resumably.

Batches go out with a few calls in flight (``in_flight``, default 2), so the gateway chunks and
stores one batch while the embedder works on another. Every call names the run
(``IngestRequest.ingest_id``) and what it reads (``source``); the last call, sent once every
other one is acknowledged, sets ``final``, and only then does the collection's status
(``GetCollection``) show the run complete.

Resuming. Documents are read in a fixed order and calls are acknowledged in the order they were
sent, so what is stored is a prefix of that order, plus at most the calls that were in flight
(the gateway may have finished them after the client went away). The gateway counts the
documents each run wrote. A run's id is ``<base>.<offset>.<window>``: ``base`` names the
files and the collection, ``offset`` is the position the run started from (every document
before it is stored), ``window`` the documents it keeps in flight. A run that stopped after the
gateway counted ``n`` is resumed, as a new run, from ``offset + n - window``: a few documents
are sent again (harmless: ingest replaces documents by id), none is skipped, and since each
run counts only its own writes, no resend is ever counted twice, however often it stops.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import grpc

from ragtune.documents.reading import Problem
from ragtune.documents.report import FileResult, Report, Status
from ragtune.v1 import gateway_pb2

# The gateway names the offending field first: "documents[3].text: must be at most ... characters".
_DOCUMENT_ERROR = re.compile(r"^documents\[(\d+)\]\.?([\w.]*): (.*)$", re.DOTALL)

Item = tuple[int, gateway_pb2.Document]  # (index of its file in the report, document)

# A call's documents stop short of this many bytes: a replica's gRPC server takes messages of
# at most 4 MiB (Ray Serve's RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH); a larger document goes
# alone, and is reported as failed if the gateway refuses it.
MAX_CALL_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    collection: str
    base_id: str  # names the files and the collection (reading.Plan.ingest_id)
    source: str
    batch: int = 64
    in_flight: int = 2

    def __post_init__(self) -> None:
        if self.batch < 1 or self.in_flight < 1:
            raise ValueError("--batch and --in-flight must be at least 1")


class Sender:
    """Sends what ``reading.read`` yields and records every outcome in ``report``."""

    def __init__(
        self,
        stub,  # a ragtune.v1 GatewayStub
        settings: Settings,
        report: Report,
        *,
        metadata: Sequence[tuple[str, str]],
        timeout_s: float,
        progress: Callable[[int], object] = lambda n: None,
    ) -> None:
        self.stub, self.settings, self.report = stub, settings, report
        self.metadata, self.timeout_s, self.progress = list(metadata), timeout_s, progress
        self.window = settings.in_flight * settings.batch  # documents possibly in flight
        self.ingest_id = run_id(settings.base_id, 0, self.window)
        self._pending: deque[tuple[grpc.Future, list[Item], bool]] = deque()
        self._calls = 0

    def resume(self) -> Resume | None:
        """Where an earlier run of the same ingest got to (None: there was none); the run this
        sender starts continues from there."""
        request = gateway_pb2.GatewayCollectionRequest(name=self.settings.collection)
        try:
            reply = self.stub.GetCollection(request, metadata=self.metadata, timeout=self.timeout_s)
        except grpc.RpcError as err:  # a new collection, or a gateway without GetCollection
            if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                return None
            raise
        if not reply.HasField("last_ingest"):
            return None
        found = resume_point(reply.last_ingest, self.settings.base_id)
        if found is not None:
            self.ingest_id = run_id(self.settings.base_id, found.skip, self.window)
        return found

    def send(
        self,
        items: Iterable[tuple[int, gateway_pb2.Document | Problem | None]],
        *,
        skip: int = 0,
        final: bool = True,
    ) -> None:
        """Send every document of ``items`` after the first ``skip`` (counted as unchanged:
        an earlier run of this ingest stored them); ``final=False`` sends nothing at all."""
        files = self.report.files
        resumed = skip > 0
        first_from: dict[str, int] = {}  # document id -> the file that gave it first
        batch: list[Item] = []
        size = 0
        try:
            for index, item in items:
                result = files[index]
                if item is None:
                    result.read_all = True
                elif isinstance(item, Problem):
                    (result.failed if item.status == Status.FAILED else result.skipped).append(
                        item.reason
                    )
                    self.progress(1)
                elif item.doc_id in first_from:
                    other = files[first_from[item.doc_id]].path
                    result.failed.append(f"document id {item.doc_id!r} already read from {other}")
                    self.progress(1)
                else:
                    first_from[item.doc_id] = index
                    result.documents += 1
                    if skip > 0 or not final:
                        skip -= 1
                        result.unchanged += 1
                        self.progress(1)
                        continue
                    if batch and size + item.ByteSize() > MAX_CALL_BYTES:
                        self._submit(batch, final=False)
                        batch, size = [], 0
                    batch.append((index, item))
                    size += item.ByteSize()
                    if len(batch) == self.settings.batch:
                        self._submit(batch, final=False)
                        batch, size = [], 0
            while self._pending:
                self._settle()
            if final and (batch or self._calls or resumed):
                self._submit(batch, final=True)
                self._settle()
        except BaseException:  # Ctrl-C or a failed call: stop what is still in flight
            for future, _, _ in self._pending:
                future.cancel()
            self._pending.clear()
            raise

    def _submit(self, batch: list[Item], *, final: bool) -> None:
        while len(self._pending) >= self.settings.in_flight:
            self._settle()
        self._pending.append((self._call(batch, final), batch, final))
        self._calls += 1

    def _call(self, batch: list[Item], final: bool) -> grpc.Future:
        s = self.settings
        request = gateway_pb2.IngestRequest(
            collection=s.collection,
            documents=[doc for _, doc in batch],
            create_collection=True,
            ingest_id=self.ingest_id,
            source=s.source,
            final=final,
        )
        return self.stub.Ingest.future(request, metadata=self.metadata, timeout=self.timeout_s)

    def _settle(self) -> None:
        """Wait for the oldest call; a document the gateway rejects is reported and the rest of
        its batch sent again."""
        future, batch, final = self._pending[0]  # stays there, to be cancelled, until settled
        while True:
            try:
                reply = future.result()
                break
            except grpc.RpcError as err:
                rejected = _rejected(err, len(batch))
                if rejected is None:
                    raise
                position, reason = rejected
                index, doc = batch.pop(position)
                self._reject(self.report.files[index], doc, reason)
                if not batch and not final:
                    self._pending.popleft()
                    return
                future = self._call(batch, final)
                self._pending[0] = (future, batch, final)
        self._pending.popleft()
        for index, _ in batch:
            self.report.files[index].stored += 1
        self.report.chunks += reply.chunks
        self.report.seq = max(self.report.seq, reply.seq)
        if reply.HasField("run"):
            self.report.complete = reply.run.complete
        self.progress(len(batch))

    def _reject(self, result: FileResult, doc: gateway_pb2.Document, reason: str) -> None:
        result.documents -= 1
        several = result.type in ("jsonl", "beir")
        result.failed.append(f"{doc.doc_id}: {reason}" if several else reason)
        self.progress(1)


def _rejected(err: grpc.RpcError, size: int) -> tuple[int, str] | None:
    """(position in the batch, reason) when the gateway rejected one document of it."""
    details = err.details() or ""
    if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return (0, f"too large for one call: {details}") if size == 1 else None
    if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return None
    found = _DOCUMENT_ERROR.match(details)
    if not found or int(found[1]) >= size:
        return None
    field = f"{found[2]}: " if found[2] else ""
    return int(found[1]), f"rejected by the gateway: {field}{found[3]}"


@dataclass(frozen=True)
class Resume:
    run: gateway_pb2.IngestRun  # the earlier run, as the gateway has it
    stored: int  # documents stored, as far as the gateway counted
    skip: int  # documents certainly stored: the position to continue from


def run_id(base: str, offset: int, window: int) -> str:
    return f"{base}.{offset}.{window}"


def resume_point(run: gateway_pb2.IngestRun, base: str) -> Resume | None:
    """Where to continue after ``run``, when it is a run of the ingest named ``base``."""
    found = re.fullmatch(re.escape(base) + r"\.(\d+)\.(\d+)", run.ingest_id)
    if not found:
        return None
    offset, window = int(found[1]), int(found[2])
    return Resume(run, offset + run.documents, offset + max(0, run.documents - window))
