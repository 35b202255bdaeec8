"""The ragtune command against the running platform, as a user in a second shell would use it."""

from __future__ import annotations

import json

import pytest

from ragtune import cli
from tests.conftest import DEMO_CORPUS

pytestmark = pytest.mark.integration


def ragtune(platform, *args: str, key: str | None = None) -> list[str]:
    base = ["--target", platform.target, "--api-key", key or platform.acme_key]
    return [*args, *base]


def test_ingest_a_folder_then_ask_on_every_path(platform, capsys, tmp_path):
    assert (
        cli.main(
            ragtune(platform, "ingest", str(DEMO_CORPUS), "--collection", "cli-kb", "--batch", "10")
        )
        == 0
    )
    out = capsys.readouterr()
    assert "24 files: 24 ingested" in out.out and "stored 24 documents" in out.out
    assert "'cli-kb'" in out.out

    assert (
        cli.main(
            ragtune(
                platform,
                "ask",
                "When did the Lyon office open?",
                "--collection",
                "cli-kb",
                "--json",
            )
        )
        == 0
    )
    reply = json.loads(capsys.readouterr().out)
    assert reply["route"]["path"] == "PATH_RAG" and reply["citations"]

    assert (
        cli.main(
            ragtune(
                platform, "ask", "Kestrel battery?", "--path", "tuned", "--adapter", "json-answer"
            )
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "route: TUNED" in out and 'answer: {"answer": "' in out and "[1]" not in out

    assert (
        cli.main(
            ragtune(
                platform,
                "ask",
                "Kestrel battery?",
                "--adapter",
                "pirate",
                "--collection",
                "cli-kb",
                "--stream",
            )
        )
        == 0
    )
    out = capsys.readouterr().out
    # The route once, first; then the answer as it streams; then citations and the rest.
    assert out.startswith("route: HYBRID") and out.count("route: ") == 1
    assert "Ahoy!" in out and "[1]" in out


def test_ingest_reads_jsonl_and_reports_errors_plainly(platform, capsys, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps(
                {"_id": f"d{i}", "title": f"Doc {i}", "text": f"Fact number {i} about robots."}
            )
            for i in range(3)
        )
    )
    assert (
        cli.main(ragtune(platform, "ingest", "--beir", str(tmp_path), "--collection", "beir")) == 0
    )
    assert "stored 3 documents" in capsys.readouterr().out
    assert cli.main(ragtune(platform, "ask", "q", "--collection", "missing")) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "ragtune: NOT_FOUND: collection 'missing' not found"
    assert err[1].startswith("hint: `ragtune collections` lists yours")
    assert cli.main(ragtune(platform, "ask", "q", key="wrong")) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_adapters_command_lists_what_each_adapter_is_for(platform, capsys):
    assert cli.main(ragtune(platform, "adapters", "list")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith("json-answer") and "loaded" in line and "json" in line for line in lines
    )
    assert any(line.startswith("pirate") and "Ahoy" in line for line in lines)


def test_usage_and_feedback_commands(platform, capsys):
    assert cli.main(ragtune(platform, "ask", "Talk like a pirate about kites.")) == 0
    out = capsys.readouterr().out
    assert "cost:" in out and "micro-USD" in out
    request_id = next(line.split()[1] for line in out.splitlines() if line.startswith("request:"))
    assert cli.main(ragtune(platform, "feedback", request_id, "5", "--comment", "great")) == 0
    assert "rating 5 for a TUNED answer" in capsys.readouterr().out
    assert cli.main(ragtune(platform, "usage", "--json")) == 0
    usage = json.loads(capsys.readouterr().out)
    # Typed JSON: counts are numbers, names as in the proto.
    assert usage["tenant"] == "acme" and usage["total_cost_micro_usd"] > 0
    assert any(r["path"] == "PATH_TUNED" and r["rated"] >= 1 for r in usage["rows"])
    assert cli.main(ragtune(platform, "usage", "--since", "2026-13-01")) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
