"""``ragtune ingest``: plan, resume, send with a progress bar, report, exit code."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import grpc

from ragtune.documents.reading import SUPPORTED_HELP, NothingToIngest, Plan, plan_beir, plan_paths
from ragtune.documents.reading import read as read_plan
from ragtune.documents.report import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOTHING,
    FileResult,
    Report,
    Status,
)
from ragtune.documents.upload import Sender, Settings

__all__ = ["DEFAULT_BATCH", "DESCRIPTION", "EXIT_CODES_HELP", "Options", "ingest"]

DEFAULT_BATCH = 64  # documents per call; measured with load_tests/bench_ingest.py (docs/ingest.md)
DESCRIPTION = f"""\
Chunk, embed and store documents in a collection of your tenant (created if missing).

Reads {SUPPORTED_HELP}.
Text files must be UTF-8. Folders are read recursively in name order; hidden files and
folders are passed over. Each file is one document: its id is its path relative to the folder
given (its name when named itself), its title the first heading (the PDF's or HTML page's own
title), and its chunks carry metadata `source` (folder name and relative path) and `type`.
Ingesting the same id again replaces the document.

The end of the run reports every file: ingested, unchanged, skipped or failed, and why
(--json for programs). A bulk ingest is resumable: interrupted (Ctrl-C, a lost connection),
the same command run again continues where the gateway says it got to."""


@dataclass(frozen=True)
class Options:
    collection: str
    paths: tuple[Path, ...] = ()
    beir: Path | None = None
    batch: int = 64
    in_flight: int = 2
    force: bool = False  # send everything again, even if this same ingest completed
    json: bool = False
    every_file: bool = False


def ingest(
    options: Options,
    stub,  # a ragtune.v1 GatewayStub
    *,
    metadata: list[tuple[str, str]],
    timeout_s: float,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one ``ragtune ingest``; returns its exit code (report.EXIT_CODES_HELP). The report
    goes to ``out`` (default: stdout), progress and messages to ``err`` (default: stderr)."""
    out, err = out or sys.stdout, err or sys.stderr
    report: Report | None = None
    try:
        try:
            plan = plan_beir(options.beir) if options.beir else plan_paths(list(options.paths))
        except NothingToIngest as problem:
            print(f"ragtune ingest: {problem}", file=err)
            return EXIT_NOTHING
        report = _report(options.collection, plan)
        if not plan.readable:
            return _finish(report, options, out)
        settings = Settings(
            options.collection,
            plan.ingest_id(options.collection),  # with --force, a name of its own
            plan.source,
            batch=options.batch,
            in_flight=options.in_flight,
        )
        if options.force:  # a new run: the gateway's record of the earlier one stays as it was
            settings = replace(settings, base_id=f"{settings.base_id}-{time.time_ns() // 10**6}")
        return _send(plan, settings, report, options, stub, metadata, timeout_s, out, err)
    except KeyboardInterrupt:
        done = f"{report.stored + report.unchanged} documents stored" if report else "nothing sent"
        run = f" (ingest {report.ingest_id})" if report and report.ingest_id else ""
        print(f"ragtune ingest: interrupted: {done} in {options.collection!r}{run}; "
              "run the same command again to resume", file=err)  # fmt: skip
        return EXIT_INTERRUPTED


def _report(collection: str, plan: Plan) -> Report:
    files = [
        FileResult(e.name, e.type, Status.SKIPPED if e.skip else Status.PENDING, e.skip)
        for e in plan.entries
    ]
    return Report(collection, files, source=plan.source, supported=SUPPORTED_HELP)


def _send(plan, settings, report, options, stub, metadata, timeout_s, out, err) -> int:
    from tqdm import tqdm

    sender = Sender(stub, settings, report, metadata=metadata, timeout_s=timeout_s)
    earlier = None if options.force else sender.resume()
    report.ingest_id = sender.ingest_id
    skip, final = 0, True
    if earlier is not None:
        report.resumed_from = earlier.stored
        if earlier.run.complete:
            final, report.complete, report.ingest_id = False, True, earlier.run.ingest_id
            print(f"{plan.source} is already stored in {options.collection!r} (ingest "
                  f"{earlier.run.ingest_id}, completed {earlier.run.updated_at}): nothing to "
                  "send; --force sends it again", file=err)  # fmt: skip
        else:
            skip = earlier.skip
            print(f"resuming {settings.base_id}: {earlier.stored} documents already stored",
                  file=err)  # fmt: skip
    total = plan.expected_documents()
    with tqdm(total=total, unit="doc", desc=f"ingest → {options.collection}", file=err,
              disable=None, dynamic_ncols=True) as bar:  # fmt: skip
        sender.progress = bar.update
        try:
            sender.send(read_plan(plan), skip=skip, final=final)
        except grpc.RpcError as failure:
            bar.close()
            report.settle()
            _print(report, options, out)
            print(f"ragtune ingest: the gateway stopped the run: {failure.code().name}: "
                  f"{failure.details()}; {report.stored + report.unchanged} documents stored; "
                  "run the same command again to resume", file=err)  # fmt: skip
            return EXIT_FAILED
    return _finish(report, options, out)


def _finish(report: Report, options: Options, out: TextIO) -> int:
    report.settle()
    _print(report, options, out)
    return report.exit_code()


def _print(report: Report, options: Options, out: TextIO) -> None:
    if options.json:
        print(json.dumps(report.as_dict(), indent=2), file=out)
    else:
        print(report.table(every_file=options.every_file), file=out)
