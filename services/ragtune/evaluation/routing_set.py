"""Build the labelled routing set: requests with the path a careful engineer would pick.

Sources, kept apart by split so nothing of the test split is seen while calibrating:

- SciFact claims with relevance judgements (answerable from the corpus): claims of the SciFact
  **train** qrels go to our train split, claims of its **test** qrels to our test split.
- Questions no biomedical abstract answers (``ragtune/examples/routing/off-corpus-questions.txt``, 140
  hand-written questions over 14 everyday domains), shuffled and split in half.

Labels follow the decision framework, for the demo adapters (json-answer, pirate, tldr):

=====================================================  ========
request                                                expected
=====================================================  ========
corpus claim, nothing else asked                       RAG
corpus claim marked freshness-sensitive                RAG
corpus claim + a format/tone/task (phrase or field)    HYBRID
off-corpus question + a format/tone/task               TUNED
off-corpus question + a behaviour + citations required HYBRID
off-corpus question, nothing else asked                RAG (no adapter applies: never TUNED)
=====================================================  ========

The phrasings of behaviour requests differ between splits (train uses the first half of each
list, test the second), so the test split also checks that the cues generalise.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

STYLES = {
    "json": [
        "Answer in JSON: {q}",
        "{q} Reply as a JSON object.",
        "Give me a json answer: {q}",
        "Return JSON only. {q}",
        "{q} (respond with JSON)",
        "As JSON, please: {q}",
    ],
    "pirate": [
        "Talk like a pirate: {q}",
        "{q} Answer in a pirate voice.",
        "Ahoy! {q}",
        "Explain it like a pirate would: {q}",
        "{q} Say it the way a pirate would.",
        "Pirate style, please: {q}",
    ],
    "tldr": [
        "TL;DR: {q}",
        "{q} Give me the TL;DR.",
        "Summarize in one line: {q}",
        "{q} Just a short summary, please.",
        "tldr {q}",
        "Summarise this for me: {q}",
    ],
}
FIELDS = {"json": {"output_format": "json"}, "pirate": {"tone": "pirate"},
          "tldr": {"task": "summarization"}}  # fmt: skip

# Requests per split, by kind.
COUNTS = {
    "claim": 25,
    "claim_fresh": 5,
    "claim_style": 20,
    "claim_field": 5,
    "off_style": 20,
    "off_field": 5,
    "off_style_cited": 5,
    "off_plain": 10,
}
EXPECTED = {
    "claim": "RAG",
    "claim_fresh": "RAG",
    "claim_style": "HYBRID",
    "claim_field": "HYBRID",
    "off_style": "TUNED",
    "off_field": "TUNED",
    "off_style_cited": "HYBRID",
    "off_plain": "RAG",
}


def rule_signals(kind: str) -> dict:
    """The request flags a kind carries (both routing sets label by the same rules)."""
    return {
        **({"freshness_sensitive": True} if kind == "claim_fresh" else {}),
        **({"require_citations": True} if kind == "off_style_cited" else {}),
    }


def _claims(beir_dir: Path, split: str) -> list[str]:
    qrels = beir_dir / "qrels" / f"{split}.tsv"
    ids = {line.split("\t")[0] for line in qrels.read_text().splitlines()[1:] if line.strip()}
    claims = []
    with (beir_dir / "queries.jsonl").open() as f:
        for line in f:
            record = json.loads(line)
            if record["_id"] in ids:
                claims.append(record["text"])
    return claims


def build(
    beir_dir: Path, off_corpus_file: Path, *, seed: int = 13, counts: dict[str, int] = COUNTS
) -> list[dict]:
    rng = random.Random(seed)
    off = [q for q in off_corpus_file.read_text().splitlines() if q.strip()]
    rng.shuffle(off)
    half = len(off) // 2
    pools = {"train": off[:half], "test": off[half:]}
    items: list[dict] = []
    for split, beir_split in (("train", "train"), ("test", "test")):
        claims = _claims(beir_dir, beir_split)
        rng.shuffle(claims)
        off_pool = pools[split]
        for kind, count in counts.items():
            source = claims if kind.startswith("claim") else off_pool
            if len(source) < count:
                raise ValueError(f"not enough {kind} questions for the {split} split")
            for _ in range(count):
                question = source.pop()
                signals: dict = {}
                style = rng.choice(sorted(STYLES))
                phrasings = STYLES[style]
                phrasings = (
                    phrasings[: len(phrasings) // 2]
                    if split == "train"
                    else phrasings[len(phrasings) // 2 :]
                )
                if kind.endswith("_style") or kind == "off_style_cited":
                    question = rng.choice(phrasings).format(q=question)
                elif kind.endswith("_field"):
                    signals.update(FIELDS[style])
                signals.update(rule_signals(kind))
                items.append(
                    {
                        "id": f"{split}-{len(items):04d}",
                        "split": split,
                        "kind": kind,
                        "question": question,
                        "signals": signals,
                        "expected_path": EXPECTED[kind],
                    }
                )
    return items


def write(items: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")


def read(path: Path, split: str | None = None) -> list[dict]:
    items = []
    with path.open() as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if item["expected_path"] not in ("RAG", "TUNED", "HYBRID"):
                    raise ValueError(f"unknown expected_path {item['expected_path']!r}")
                item.setdefault("signals", {})
                str(item["question"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: not a routing request ({exc})") from None
            if split is None or item.get("split") == split:
                items.append(item)
    return items
