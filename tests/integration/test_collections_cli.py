"""A collection's whole life through the gateway, with the CLI a user has: created with chosen
settings (hybrid), filled, searched with a metadata filter, a document deleted, then dropped."""

from __future__ import annotations

import json

import pytest

from ragtune import cli
from ragtune.v1 import gateway_pb2

pytestmark = pytest.mark.integration


def ragtune(platform, capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main([*args, "--target", platform.target, "--api-key", platform.acme_key])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_hybrid_collection_from_creation_to_deletion(platform, capsys):
    code, out, _ = ragtune(platform, capsys, "collections", "create", "handbook",
                           "--lexical", "--index-type", "hnsw", "--json")  # fmt: skip
    created = json.loads(out)
    assert code == 0 and created["lexical"] and created["index_type"] == "hnsw"

    with platform.client() as client:
        client.ingest("handbook", [
            gateway_pb2.Document(doc_id="vpn", title="VPN", metadata={"team": "it"},
                                 text="Connect to the VPN with the Northwind client, profile NW-3."),
            gateway_pb2.Document(doc_id="leave", title="Leave", metadata={"team": "hr"},
                                 text="Ask for leave in the HR portal two weeks ahead."),
        ], create=False)  # fmt: skip

    code, out, _ = ragtune(platform, capsys, "ask", "How do I connect to the VPN?",
                           "--collection", "handbook", "--path", "rag", "--filter", "team=hr",
                           "--json")  # fmt: skip
    reply = json.loads(out)
    assert code == 0 and [c["doc_id"] for c in reply["citations"]] == ["leave"]
    assert {c["score_kind"] for c in reply["citations"]} <= {"rrf", "rerank-logit"}
    assert isinstance(reply["usage"]["prompt_tokens"], int)

    code, out, _ = ragtune(platform, capsys, "docs", "delete", "vpn", "--collection", "handbook")
    assert code == 0 and "deleted 1 chunks" in out
    code, out, _ = ragtune(platform, capsys, "collections", "show", "handbook", "--json")
    shown = json.loads(out)
    assert shown["collection"]["document_count"] == 1  # a number, not "1"

    code, out, _ = ragtune(platform, capsys, "ask", "VPN?", "--collection", "handbook",
                           "--path", "rag", "--json")  # fmt: skip
    assert "vpn" not in {c["doc_id"] for c in json.loads(out)["citations"]}

    code, _, err = ragtune(platform, capsys, "collections", "delete", "handbook")
    assert code == 2 and "--yes" in err  # nothing deleted without confirmation
    code, out, _ = ragtune(platform, capsys, "collections", "delete", "handbook", "--yes")
    assert code == 0
    code, _, err = ragtune(platform, capsys, "collections", "show", "handbook")
    assert code == 1 and "NOT_FOUND" in err and "hint: `ragtune collections` lists yours" in err


def test_errors_come_with_the_next_step(platform, capsys):
    code, _, err = ragtune(platform, capsys, "ask", "Hi?", "--path", "tuned", "--adapter", "nope")
    assert code == 1 and "hint:" in err and "ragtune adapters" in err
    code = cli.main(["collections", "--target", "localhost:1", "--api-key", "x", "--timeout", "3"])
    err = capsys.readouterr().err
    assert code == 1 and "UNAVAILABLE" in err and "make run" in err
