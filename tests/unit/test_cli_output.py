"""What the CLI prints: typed JSON, tables, and the next step after an error."""

from __future__ import annotations

import grpc
import pytest

from ragtune import cli
from ragtune.output import hint, table, to_json
from ragtune.v1 import gateway_pb2


def test_json_keeps_64_bit_counts_as_numbers():
    reply = gateway_pb2.UsageResponse(
        tenant="dev",
        rows=[gateway_pb2.UsageRow(day="2026-12-06", requests=3, cost_micro_usd=42)],
        total_cost_micro_usd=42,
    )
    data = to_json(reply)
    assert data["total_cost_micro_usd"] == 42
    assert data["rows"][0]["requests"] == 3 and data["rows"][0]["cost_micro_usd"] == 42
    assert data["rows"][0]["rated"] == 0  # defaults are printed too


def test_tables_have_a_header_and_aligned_columns():
    text = table(["name", "documents"], [["demo", 24], ["kb", 3]])
    header, first, second = text.splitlines()
    assert header.split() == ["name", "documents"]
    assert first.endswith("24") and second.endswith(" 3")  # numbers right-aligned


@pytest.mark.parametrize(
    "code, details, expected",
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect", "make run"),
        (grpc.StatusCode.NOT_FOUND, "collection 'default' not found", "ragtune collections"),
        (grpc.StatusCode.FAILED_PRECONDITION, "collection 'default' is missing or empty",
         "--collection"),
        (grpc.StatusCode.NOT_FOUND, "adapter 'pirate' is not registered", "adapters load"),
        (grpc.StatusCode.UNAUTHENTICATED, "unknown API key", "RAGTUNE_API_KEY"),
    ],
)  # fmt: skip
def test_common_errors_name_the_next_command(code, details, expected):
    assert expected in hint(code, details, "localhost:9000")


def test_a_field_error_needs_no_hint():
    assert hint(grpc.StatusCode.INVALID_ARGUMENT, "question: must not be empty", "x") == ""


def test_a_malformed_filter_is_refused_before_any_call(capsys):
    code = cli.main(["ask", "hi", "--filter", "team", "--target", "localhost:1"])
    assert code == 2 and "KEY=VALUE" in capsys.readouterr().err
