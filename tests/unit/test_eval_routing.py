"""The labelled routing set's builder and `ragtune eval routing` on a tiny corpus."""

from __future__ import annotations

import json

import pytest

from ragtune import cli
from ragtune.evaluation import routing_set

DOCS = {
    "kestrel": "The Kestrel drone battery lasts 47 minutes on one charge.",
    "lyon": "The Lyon office opened in March 2026 with forty engineers.",
    "atlas": "The Atlas A2 robot arm has a warranty of 36 months.",
    "heron": "The Heron mobile robot carries 600 kilograms through narrow aisles.",
}
CLAIMS = {
    "train": {
        "c1": ("The Kestrel drone battery lasts 47 minutes.", "kestrel"),
        "c2": ("The Lyon office opened in March 2026.", "lyon"),
        "c3": ("The Atlas A2 arm has a 36 month warranty.", "atlas"),
        "c4": ("The Heron robot carries 600 kilograms.", "heron"),
    },
    "test": {
        "c5": ("Kestrel drones fly for 47 minutes per battery charge.", "kestrel"),
        "c6": ("Forty engineers started at the Lyon office in 2026.", "lyon"),
        "c7": ("The warranty of the Atlas A2 robot arm is 36 months.", "atlas"),
        "c8": ("Heron robots move 600 kg loads through narrow aisles.", "heron"),
    },
}
OFF_CORPUS = [
    "How long should I knead bread dough by hand?",
    "What is the capital of Australia?",
    "How do I undo the last git commit?",
    "Who won the 1998 football World Cup?",
    "What is a good name for a goldfish?",
    "How do I change a flat bicycle tyre?",
    "Which planet has the most moons?",
    "How do I conjugate the French verb aller?",
]
COUNTS = {"claim": 1, "claim_style": 2, "claim_field": 1, "off_style": 2, "off_plain": 1,
          "off_style_cited": 1}  # fmt: skip


@pytest.fixture
def routing_data(tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    with (beir / "corpus.jsonl").open("w") as f:
        for doc_id, text in DOCS.items():
            f.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    with (beir / "queries.jsonl").open("w") as f:
        for claims in CLAIMS.values():
            for qid, (text, _) in claims.items():
                f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, claims in CLAIMS.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, (_, d) in claims.items()]
        (beir / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    questions = tmp_path / "off.txt"
    questions.write_text("\n".join(OFF_CORPUS) + "\n")
    items = routing_set.build(beir, questions, seed=1, counts=COUNTS)
    dataset = tmp_path / "requests.jsonl"
    routing_set.write(items, dataset)
    return beir, dataset, items


def test_the_set_keeps_splits_apart_and_labels_by_the_framework(routing_data):
    beir, _, items = routing_data
    assert len(items) == 2 * sum(COUNTS.values())
    test_claims = {text for text, _ in CLAIMS["test"].values()}
    for item in items:
        from_test = any(claim in item["question"] for claim in test_claims)
        assert from_test == (item["split"] == "test") or item["kind"].startswith("off")
        assert item["expected_path"] == routing_set.EXPECTED[item["kind"]]
    cited = [i for i in items if i["kind"] == "off_style_cited"]
    assert all(i["signals"]["require_citations"] for i in cited)
    with pytest.raises(ValueError, match="not enough"):
        routing_set.build(beir, beir / "corpus.jsonl", counts={"claim": 50})


def test_eval_routing_reports_accuracy_and_a_confusion_matrix(
    routing_data, devmodel, tmp_path, capsys
):
    beir, dataset, items = routing_data
    lines = dataset.read_text().splitlines()
    wrong = json.loads(lines[-1])  # a test-split item, labelled wrongly on purpose
    wrong["expected_path"] = "TUNED" if wrong["expected_path"] != "TUNED" else "RAG"
    dataset.write_text("\n".join([*lines[:-1], json.dumps(wrong)]) + "\n")
    out = tmp_path / "result.json"
    common = ["--data-dir", str(tmp_path), "eval", "routing", "--dataset", str(dataset),
              "--beir", str(beir), "--adapters-dir", str(devmodel.base_dir.parent / "adapters")]  # fmt: skip
    assert cli.main([*common, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    result = json.loads(out.read_text())
    matrix = result["confusion_matrix"]
    total = sum(map(sum, matrix))
    assert total == result["requests"] == sum(1 for i in items if i["split"] == "test")
    assert result["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(4)) / total)
    assert [m["id"] for m in result["mistakes"]] == [wrong["id"]]  # only the planted one
    assert printed[-1] == f"routing accuracy: {result['accuracy']:.4f}"
    # Calibration reads the train split only.
    assert cli.main([*common, "--split", "train", "--calibrate", "--out", str(out)]) == 0
    calibration = json.loads(out.read_text())
    assert calibration["train_accuracy"] == 1.0
    assert calibration["unanswerable_top_score_mean"] < calibration["min_top_score"]
    assert cli.main([*common, "--calibrate"]) == 2
    assert "train split only" in capsys.readouterr().err
