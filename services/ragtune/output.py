"""What the ``ragtune`` command prints: typed JSON of replies, tables with a header, and the
one-line hint it adds to an error (the server's message says what is wrong; the hint says which
command to run next)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def to_json(message: Message) -> dict[str, Any]:
    """The message as JSON with every field (defaults included) and 64-bit integers as numbers
    (protobuf's JSON mapping writes them as strings, which scripts then have to convert)."""
    data = MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    return _numbers(message.DESCRIPTOR, data)


def _numbers(descriptor: Any, data: dict[str, Any]) -> dict[str, Any]:
    for field in descriptor.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        if field.type in _INT64:
            data[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict):
                    _numbers(field.message_type, item)
    return data


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns under a header; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) for row in rows)
        for i in range(len(headers))
    ]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(width) if is_num else cell.ljust(width)
            for cell, width, is_num in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return "-" if value in ("", None) else str(value)


def hint(code: grpc.StatusCode, details: str, target: str) -> str:
    """The next step for a failed call, or "" when the message says it all."""
    text = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        return (
            f"is the platform running at {target}? Start it with `make run` (or "
            "`ragtune serve`), or point --target / RAGTUNE_TARGET at it"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (
            "pass --api-key or set RAGTUNE_API_KEY (`make run` saves a dev key in "
            "data/dev-api-key; `ragtune keys create --tenant NAME` makes one)"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return "loading and unloading adapters needs an admin key (`ragtune keys create --admin`)"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "the call ran past --timeout (seconds): raise it, or ask for fewer --max-tokens"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "the platform is at capacity: retry in a moment"
    if "adapter" in text and code in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    ):
        return (
            "`ragtune adapters list` shows the registered adapters; an admin registers one "
            "with `ragtune adapters load NAME`"
        )
    if "collection" in text and code in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    ):
        return (
            "`ragtune collections` lists yours; name one with --collection, or create one "
            "with `ragtune ingest PATH --collection NAME` or `ragtune collections create NAME`"
        )
    if code == grpc.StatusCode.ALREADY_EXISTS and "collection" in text:
        return (
            "`ragtune collections show NAME` shows it; `ragtune collections delete NAME` drops it"
        )
    return ""
