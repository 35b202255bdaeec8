"""Build the second labelled routing set, "pyref": the Python Language Reference as corpus.

A different domain from SciFact (Python's syntax and data model, not biomedical abstracts), and
nothing is fitted on it: every request is in the ``test`` split. Two outputs, both reproducible:

- ``corpus.jsonl`` (BEIR layout: ``_id``, ``title``, ``text``) from the reference topics CPython
  ships for ``help()`` (``pydoc_data.topics.topics``; PSF licence). Each topic is split at its
  headings into sections (the big topics hold many unrelated sections: ``specialnames`` runs
  from ``__new__`` to ``__slots__`` to coroutines), sections repeated under several topics
  (``customization`` is a section of ``specialnames``) are kept once, and sections longer than
  ``MAX_CHARS`` are cut at paragraph boundaries into parts; a section shorter than ``MIN_CHARS`` (a bare
  introduction to its sub-sections) is joined to the next one.
- ``requests.jsonl`` in the schema of ``routing/requests.jsonl``, assembled from hand-written
  questions in ``questions.yaml`` (kind -> questions; a behaviour *field* request names its
  ``style``). The builder only assembles: it adds ids, signals and the expected path by kind.

=======================================================  ========  ===================
request                                                  expected  kind
=======================================================  ========  ===================
on-corpus question, nothing else asked                   RAG       claim
on-corpus question marked freshness-sensitive            RAG       claim_fresh
on-corpus question using a cue-like word, not asking     RAG       claim_cue_unasked
on-corpus question + a behaviour phrase                  HYBRID    claim_style
on-corpus question + a behaviour field                   HYBRID    claim_field
off-corpus question + a behaviour phrase                 TUNED     off_style
off-corpus question + a behaviour field                  TUNED     off_field
off-corpus question + a behaviour phrase + citations     HYBRID    off_style_cited
off-corpus question, nothing else asked                  RAG       off_plain
off-corpus question using a cue-like word, not asking    RAG       off_cue_unasked
=======================================================  ========  ===================

Kinds shared with the SciFact set keep its names ("claim" = answerable from the corpus), so
per-kind accuracy lines up across the two sets.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from ragtune.evaluation import routing_set

STYLES = ("json", "pirate", "tldr")
FIELDS = {"json": {"output_format": "json"}, "pirate": {"tone": "pirate"},
          "tldr": {"task": "summarization"}}  # fmt: skip
# The SciFact set's kinds and labels, plus mentions of a behaviour that do not ask for it.
EXPECTED = {**routing_set.EXPECTED, "claim_cue_unasked": "RAG", "off_cue_unasked": "RAG"}
MAX_CHARS = 4000  # longer sections are cut into parts near this size
MIN_CHARS = 200  # shorter sections are joined to the next one
# A heading: a line underlined by *, = or - of the same length (~ marks minor sub-headings).
_HEADING = re.compile(r"^(?P<title>\S[^\n]*)\n(?P<rule>[*=-])(?P=rule)+\n", re.MULTILINE)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "section"


def _sections(topic: str, text: str) -> list[tuple[str, str]]:
    """(heading, body) pairs of one topic; text before the first heading goes with the topic."""
    found = [
        m for m in _HEADING.finditer(text) if len(m.group(0).split("\n")[1]) == len(m["title"])
    ]
    if not found:
        return [(topic, text.strip())]
    out, carried = [], ""
    if text[: found[0].start()].strip():
        out.append((topic, text[: found[0].start()].strip()))
    for m, after in zip(found, [*found[1:], None], strict=True):
        body = text[m.end() : after.start() if after else len(text)].strip()
        if len(body) < MIN_CHARS and after:  # a bare intro ("New in version 3.5."): go on
            carried += f"{m['title'].strip()}\n\n{body}\n\n"
            continue
        out.append((m["title"].strip(), carried + body))
        carried = ""
    return out


def _parts(body: str, limit: int) -> list[str]:
    """The body cut at paragraph boundaries into pieces of about ``limit`` characters."""
    if len(body) <= limit:
        return [body]
    parts, current = [], ""
    for para in re.split(r"\n\s*\n", body):
        if current and len(current) + len(para) > limit:
            parts.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    return [*parts, current] if current else parts


def build_corpus(topics: dict[str, str], max_chars: int = MAX_CHARS) -> list[dict]:
    docs, seen_text, seen_id = [], set(), set()
    for topic in sorted(topics):
        for heading, body in _sections(topic, topics[topic]):
            key = " ".join(body.split())
            if key in seen_text:  # the same section under another topic
                continue
            seen_text.add(key)
            pieces = _parts(body, max_chars)
            for n, piece in enumerate(pieces, start=1):
                doc_id = f"{topic}/{_slug(heading)}"
                title = heading
                if len(pieces) > 1:
                    doc_id, title = f"{doc_id}/{n}", f"{heading} (part {n} of {len(pieces)})"
                while doc_id in seen_id:
                    doc_id += "-"
                seen_id.add(doc_id)
                docs.append({"_id": doc_id, "title": title, "text": piece})
    return docs


def build_requests(questions: dict[str, list], name: str = "pyref") -> list[dict]:
    """The routing requests, in file order, from ``questions.yaml``'s kind -> questions; ids
    are ``NAME-0000`` on."""
    unknown = set(questions) - set(EXPECTED)
    if unknown:
        raise ValueError(f"unknown kinds in questions file: {sorted(unknown)}")
    items = []
    for kind, entries in questions.items():
        for entry in entries:
            entry = entry if isinstance(entry, dict) else {"q": entry}
            if not isinstance(entry.get("q"), str):
                raise ValueError(f"{kind}: an entry without a question text: {entry!r}")
            signals: dict = {}
            if kind.endswith("_field"):
                if entry.get("style") not in STYLES:
                    raise ValueError(f"{kind} question without a style: {entry['q']!r}")
                signals.update(FIELDS[entry["style"]])
            signals.update(routing_set.rule_signals(kind))
            items.append(
                {
                    "id": f"{name}-{len(items):04d}",
                    "split": "test",
                    "kind": kind,
                    "question": " ".join(str(entry["q"]).split()),
                    "signals": signals,
                    "expected_path": EXPECTED[kind],
                }
            )
    check_labels(items)
    return items


def check_labels(items: list[dict]) -> None:
    """Every request's expected path is its kind's, by the framework above."""
    for item in items:
        if EXPECTED.get(item["kind"]) != item["expected_path"]:
            raise ValueError(
                f"{item['id']}: kind {item['kind']} expects {EXPECTED.get(item['kind'])}"
            )
        signals = item["signals"]
        behaviour_field = any(k in signals for k in ("output_format", "tone", "task"))
        if behaviour_field != item["kind"].endswith("_field"):
            raise ValueError(f"{item['id']}: behaviour field and kind {item['kind']} disagree")


def write_jsonl(records: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def build(
    folder: Path, topics: dict[str, str] | None = None, name: str = "pyref", corpus: bool = True
) -> tuple[list[dict], list[dict]]:
    """Write ``requests.jsonl`` into ``folder`` (which holds ``questions.yaml``), and with
    ``corpus`` its ``corpus.jsonl``; ``topics`` defaults to the running Python's
    ``pydoc_data``."""
    docs = []
    if corpus:
        if topics is None:
            from pydoc_data.topics import topics
        docs = build_corpus(topics)
        write_jsonl(docs, folder / "corpus.jsonl")
    items = build_requests(yaml.safe_load((folder / "questions.yaml").read_text()), name)
    routing_set.write(items, folder / "requests.jsonl")
    return docs, items


def main(argv: list[str] | None = None) -> int:
    from ragtune.resources import EXAMPLES

    parser = argparse.ArgumentParser(
        prog="python -m ragtune.evaluation.pyref_set",
        description="Write the pyref routing set: corpus.jsonl from this Python's reference "
        "topics (pydoc_data) and requests.jsonl from questions.yaml, into FOLDER.",
    )
    parser.add_argument(
        "folder", nargs="?", type=Path, default=EXAMPLES / "routing-pyref",
        help="folder holding questions.yaml (default: the shipped routing-pyref)",
    )  # fmt: skip
    parser.add_argument(
        "--requests-only", action="store_true",
        help="write requests.jsonl only: the questions are about routing-pyref's corpus "
        "(as routing-pyref-fresh's are)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    name = args.folder.name.removeprefix("routing-")
    docs, items = build(args.folder, name=name, corpus=not args.requests_only)
    version = sys.version.split()[0]
    if docs:
        print(f"{len(docs)} documents (Python {version} reference topics) -> "
              f"{args.folder / 'corpus.jsonl'}")  # fmt: skip
    print(f"{len(items)} requests -> {args.folder / 'requests.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
