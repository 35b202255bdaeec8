"""The shipped pyref routing set: schema, labels, reproducibility, independence from SciFact's."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from ragtune.evaluation import pyref_set, routing_set
from ragtune.resources import EXAMPLES, ROUTING_DIR, ROUTING_PYREF_FRESH_DIR

FOLDER = EXAMPLES / "routing-pyref"
# pyref-fresh: new questions on pyref's corpus, same builder and framework.
FOLDERS = [pytest.param(FOLDER, id="pyref"), pytest.param(ROUTING_PYREF_FRESH_DIR, id="fresh")]
SOURCE_PYTHON = (3, 11, 7)  # the corpus's pydoc_data (README.md)
SIGNALS = {"output_format", "tone", "task", "require_citations", "freshness_sensitive"}


@pytest.fixture(scope="module", params=FOLDERS)
def folder(request):
    return request.param


@pytest.fixture(scope="module")
def items(folder):
    return routing_set.read(folder / "requests.jsonl")


def test_requests_follow_the_routing_set_schema(items):
    for item in items:
        assert list(item) == ["id", "split", "kind", "question", "signals", "expected_path"]
        assert item["split"] == "test" and item["question"].strip()
        assert set(item["signals"]) <= SIGNALS
    ids = [i["id"] for i in items]
    assert len(set(ids)) == len(ids) == len(items) >= 180
    assert len({i["question"] for i in items}) == len(items)


def test_every_kind_has_its_frameworks_path(items):
    pyref_set.check_labels(items)
    for item in items:
        kind, signals = item["kind"], item["signals"]
        assert item["expected_path"] == pyref_set.EXPECTED[kind]
        assert bool(signals.get("freshness_sensitive")) == (kind == "claim_fresh")
        assert bool(signals.get("require_citations")) == (kind == "off_style_cited")
    # Same name, same label as in the SciFact set.
    for item in routing_set.read(ROUTING_DIR / "requests.jsonl"):
        assert pyref_set.EXPECTED[item["kind"]] == item["expected_path"]


def test_kinds_have_the_planned_sizes(items, folder):
    counts = {kind: sum(1 for i in items if i["kind"] == kind) for kind in pyref_set.EXPECTED}
    assert all(n >= 5 for n in counts.values()), counts
    questions = yaml.safe_load((folder / "questions.yaml").read_text())
    off = [e for kind, es in questions.items() if kind.startswith("off") for e in es]
    near = [e for e in off if isinstance(e, dict) and e.get("near")]
    assert len(near) * 3 >= len(off)  # at least a third of off-corpus questions near-domain


def test_no_question_comes_from_another_set(items, folder):
    def norm(text):
        return " ".join(text.lower().split())

    others = [ROUTING_DIR, FOLDER, ROUTING_PYREF_FRESH_DIR]
    theirs = {norm(i["question"]) for other in others if other != folder
              for i in routing_set.read(other / "requests.jsonl")}  # fmt: skip
    theirs |= {norm(q) for q in (ROUTING_DIR / "off-corpus-questions.txt").read_text().splitlines()}
    assert not [i["question"] for i in items if norm(i["question"]) in theirs]
    for item in items:  # nor a SciFact question wrapped in a behaviour phrase
        assert not any(q and q in norm(item["question"]) for q in theirs if len(q) > 30)


def test_the_builder_reproduces_the_shipped_files(tmp_path):
    fresh = ROUTING_PYREF_FRESH_DIR
    (tmp_path / "questions.yaml").write_bytes((fresh / "questions.yaml").read_bytes())
    pyref_set.build(tmp_path, name="pyref-fresh", corpus=False)  # its corpus is pyref's
    assert (tmp_path / "requests.jsonl").read_bytes() == (fresh / "requests.jsonl").read_bytes()
    assert not (tmp_path / "corpus.jsonl").exists()
    (tmp_path / "questions.yaml").write_bytes((FOLDER / "questions.yaml").read_bytes())
    pyref_set.build(tmp_path)
    shipped = FOLDER / "requests.jsonl"
    assert (tmp_path / "requests.jsonl").read_bytes() == shipped.read_bytes()
    if sys.version_info[:3] != SOURCE_PYTHON:
        pytest.skip(f"corpus.jsonl comes from Python {SOURCE_PYTHON}'s pydoc_data")
    assert (tmp_path / "corpus.jsonl").read_bytes() == (FOLDER / "corpus.jsonl").read_bytes()


def test_corpus_is_a_beir_corpus_of_sections():
    docs = [json.loads(line) for line in (FOLDER / "corpus.jsonl").open()]
    assert len({d["_id"] for d in docs}) == len(docs) > 150
    assert all(set(d) == {"_id", "title", "text"} and d["text"].strip() for d in docs)
    assert max(len(d["text"]) for d in docs) < 2 * pyref_set.MAX_CHARS


def test_builder_refuses_unknown_kinds_and_field_requests_without_a_style():
    with pytest.raises(ValueError, match="unknown kinds"):
        pyref_set.build_requests({"claim_pirate": ["x"]})
    with pytest.raises(ValueError, match="without a style"):
        pyref_set.build_requests({"off_field": [{"q": "x"}]})
    with pytest.raises(ValueError, match="without a question"):
        pyref_set.build_requests({"claim": [{"How": "so"}]})  # an unquoted "a: b" in YAML


def test_sections_split_at_headings_and_drop_repeats():
    topic = (
        "Title\n*****\n\nIntro text.\n\nFirst\n=====\n\n" + "a " * 150 + "\n\nSecond\n------\n\nb\n"
    )
    docs = pyref_set.build_corpus({"t1": topic, "t2": "Second\n------\n\nb\n"})
    # A bare intro joins the next section; t2's copy of "Second" is kept once.
    assert [d["_id"] for d in docs] == ["t1/first", "t1/second"]
    assert docs[0]["text"].startswith("Title\n\nIntro text.\n\na a")
