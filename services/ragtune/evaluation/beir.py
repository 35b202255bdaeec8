"""Read a BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BeirSplit:
    doc_ids: list[str]
    doc_texts: list[str]  # title and text, as one field
    queries: dict[str, str]  # only the split's queries
    qrels: dict[str, dict[str, int]]


def load(folder: Path, split: str) -> BeirSplit:
    qrels_file = folder / "qrels" / f"{split}.tsv"
    for needed in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_file):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{folder} is not a BEIR folder with split {split!r}: no {needed}"
            )
    qrels: dict[str, dict[str, int]] = {}
    with qrels_file.open() as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)  # header
        for query_id, doc_id, score in rows:
            qrels.setdefault(query_id, {})[doc_id] = int(score)
    doc_ids, doc_texts = [], []
    with (folder / "corpus.jsonl").open() as f:
        for record in map(json.loads, f):
            doc_ids.append(str(record["_id"]))
            doc_texts.append(f"{record.get('title') or ''} {record.get('text') or ''}".strip())
    with (folder / "queries.jsonl").open() as f:
        queries = {str(r["_id"]): r["text"] for r in map(json.loads, f) if str(r["_id"]) in qrels}
    return BeirSplit(doc_ids, doc_texts, queries, qrels)
