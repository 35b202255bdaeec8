"""`ragtune eval retrieval` on a tiny BEIR folder: every mode, reranking, metrics, output."""

from __future__ import annotations

import json
import math

import pytest

from ragtune import cli
from ragtune.common.fusion import reciprocal_rank_fusion
from ragtune.evaluation.metrics import evaluate
from ragtune.evaluation.retrieval import drop_identical_ids

DOCS = {
    "kestrel": ("Kestrel drone", "The Kestrel drone battery lasts 47 minutes."),
    "lyon": ("Lyon office", "The Lyon office opened in March 2026."),
    "atlas": ("Atlas A2", "The Atlas A2 robot arm has a warranty of 36 months."),
    "heron": ("Heron AMR", "The Heron carries 600 kilograms through narrow aisles."),
    "hotline": ("Support", "The hotline is open from 07:00 to 19:00 CET on weekdays."),
    "pricing": ("Pricing", "Fleet Console Pro costs 179 euros per robot per month."),
}
QUERIES = {
    "q1": ("How long does the drone battery last?", "kestrel"),
    "q2": ("When did the office in Lyon open?", "lyon"),
    "q3": ("What warranty does the robot arm have?", "atlas"),
    "q4": ("What does the Pro plan cost?", "pricing"),
}


@pytest.fixture
def beir_dir(tmp_path):
    with (tmp_path / "corpus.jsonl").open("w") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (tmp_path / "queries.jsonl").open("w") as f:
        for qid, (text, _) in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (tmp_path / "qrels").mkdir()
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, (_, d) in QUERIES.items()]
    (tmp_path / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_metrics_score_perfect_and_missing_rankings():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    assert evaluate({"q1": {"a": 2.0, "x": 1.0}, "q2": {"b": 1.0}}, qrels)["nDCG@10"] == 1.0
    half = evaluate({"q1": {"a": 1.0}}, qrels)  # q2 has no results: it counts as 0
    assert half == {"nDCG@10": 0.5, "Recall@100": 0.5}


def test_reciprocal_rank_fusion_weights_each_ranking():
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "c"]], [1.0, 2.0], k=1)
    assert fused == pytest.approx({"a": 1 / 2, "b": 1 / 3 + 2 / 2, "c": 2 / 3})
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], [1.0, 2.0])


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_eval_finds_the_relevant_documents(beir_dir, tmp_path, capsys, mode):
    out = tmp_path / f"{mode}.json"
    args = [
        "--data-dir",
        str(tmp_path / "data"),
        "eval",
        "retrieval",
        "--beir",
        str(beir_dir),
        "--mode",
        mode,
        "--out",
        str(out),
    ]
    assert cli.main([*args, "--rerank"] if mode == "hybrid" else args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("nDCG@10: ") and lines[-1] == "Recall@100: 1.0000"
    assert "ignored as in BEIR: applied to 0 queries" in "\n".join(lines)
    result = json.loads(out.read_text())
    assert result["queries"] == 4 and result["final"]["nDCG@10"] > 0.8
    assert result["identical_ids"]["ignored"] and result["identical_ids"]["queries"] == 0
    if mode == "hybrid":
        assert set(result["metrics"]) == {"dense", "lexical", "hybrid", "hybrid+rerank"}
        assert result["rerank"]["kind"] == "maxsim"


def test_eval_refuses_a_folder_without_the_split(beir_dir, capsys):
    assert cli.main(["eval", "retrieval", "--beir", str(beir_dir), "--split", "train"]) == 2
    assert "qrels/train.tsv" in capsys.readouterr().err


@pytest.fixture
def beir_with_identical_ids(beir_dir):
    """ArguAna-style: query "q1" is also a corpus document, worded just like the query, so
    without BEIR's ignore_identical_ids it finds itself above the document that answers it."""
    with (beir_dir / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "q1", "title": "", "text": QUERIES["q1"][0]}) + "\n")
    return beir_dir


def test_drop_identical_ids_removes_only_the_querys_own_document():
    run = {"q1": {"q1": 3.0, "a": 2.0, "b": 1.0}, "q2": {"q1": 2.0, "b": 1.0}}
    kept, dropped = drop_identical_ids(run, depth=1)
    assert dropped == 1
    assert kept == {"q1": {"a": 2.0}, "q2": {"q1": 2.0}}  # cut back to depth after the drop


@pytest.mark.parametrize("mode", ["dense", "lexical"])
def test_eval_leaves_a_query_out_of_its_own_ranking(
    beir_with_identical_ids, tmp_path, capsys, mode
):
    def run(*extra):
        out = tmp_path / f"{mode}{len(extra)}.json"
        argv = ["--data-dir", str(tmp_path / "data"), "eval", "retrieval", "--mode", mode]
        argv += ["--beir", str(beir_with_identical_ids), "--out", str(out), *extra]
        assert cli.main(argv) == 0
        return json.loads(out.read_text()), capsys.readouterr().out

    ignored, printed = run()
    assert ignored["identical_ids"] == {"ignored": True, "queries": 1, "own_hits": {mode: 1}}
    assert f"applied to 1 queries, 1 own-document hits dropped ({mode} 1)" in printed
    assert ignored["final"]["nDCG@10"] == 1.0  # q1's answer is ranked first once q1 is out

    kept, printed = run("--keep-identical-ids")
    assert kept["identical_ids"] == {"ignored": False, "queries": 1, "own_hits": {mode: 1}}
    assert "kept (--keep-identical-ids)" in printed
    # q1 finds itself first and its answer second: nDCG 1/log2(3) for it, the rest unchanged
    assert kept["final"]["nDCG@10"] == pytest.approx((3 + 1 / math.log2(3)) / 4)
