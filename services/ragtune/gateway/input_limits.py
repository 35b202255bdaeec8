"""Input limits of the gateway's RPCs, from config: every string, list and map of a public
request has one. A request over a limit is refused with INVALID_ARGUMENT naming the field and
the limit, before any work (and before authentication: an oversized request costs nothing).

The check walks the request with its protobuf descriptor, so a field added to a public message
is limited (by ``max_field_chars``, ``max_list_items``) without code here.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel, Field

from ragtune.common.errors import InvalidArgument


class Limits(BaseModel):
    """What one request may carry (docs/operations.md#input-limits)."""

    max_message_bytes: int = Field(
        default=64 << 20,
        ge=1,
        description="Serialized size of any request. Serve's gRPC servers take up to 2 GiB "
        "(RAY_SERVE_GRPC_MAX_MESSAGE_SIZE lowers that for every service, replies included): "
        "the gateway refuses more than this.",
    )
    max_question_chars: int = Field(default=4000, ge=1, description="AnswerRequest.question.")
    max_documents_per_ingest: int = Field(default=1000, ge=1, description="Ingest documents.")
    max_ingest_bytes: int = Field(
        default=32 << 20, ge=1, description="Serialized size of one Ingest call's documents."
    )
    max_document_chars: int = Field(default=2_000_000, ge=1, description="Document.text.")
    max_title_chars: int = Field(default=1024, ge=1, description="Document.title.")
    max_doc_id_chars: int = Field(
        default=512, ge=1, description="Document.doc_id and DeleteDocuments doc_ids."
    )
    max_delete_ids: int = Field(default=1000, ge=1, description="DeleteDocuments doc_ids.")
    max_metadata_entries: int = Field(default=32, ge=0, description="Document.metadata.")
    max_filter_entries: int = Field(default=16, ge=0, description="AnswerRequest.filter.")
    max_key_chars: int = Field(default=128, ge=1, description="A metadata or filter key.")
    max_value_chars: int = Field(default=1024, ge=1, description="A metadata or filter value.")
    max_top_k: int = Field(default=100, ge=1, description="AnswerRequest.top_k.")
    max_tokens: int = Field(default=2048, ge=1, description="SamplingParams.max_tokens.")
    max_stop_sequences: int = Field(default=8, ge=0, description="SamplingParams.stop.")
    max_comment_chars: int = Field(default=2000, ge=0, description="FeedbackRequest.comment.")
    max_source_chars: int = Field(default=1024, ge=1, description="LoadAdapterRequest.source.")
    max_usage_days: int = Field(default=366, ge=1, description="Usage: days from since to until.")
    max_field_chars: int = Field(
        default=256,
        ge=1,
        description="Any other string field (names, ids, dates, stop sequences, ...); names "
        "are further held to 1-64 characters by their own checks.",
    )
    max_list_items: int = Field(default=1000, ge=0, description="Any other repeated field.")


# Fields with limits of their own, by full proto name: the Limits attribute that holds it.
_CHARS = {
    "ragtune.v1.AnswerRequest.question": "max_question_chars",
    "ragtune.v1.Document.text": "max_document_chars",
    "ragtune.v1.Document.title": "max_title_chars",
    "ragtune.v1.Document.doc_id": "max_doc_id_chars",
    "ragtune.v1.DeleteDocumentsRequest.doc_ids": "max_doc_id_chars",
    "ragtune.v1.FeedbackRequest.comment": "max_comment_chars",
    "ragtune.v1.LoadAdapterRequest.source": "max_source_chars",
}
_ITEMS = {
    "ragtune.v1.IngestRequest.documents": "max_documents_per_ingest",
    "ragtune.v1.DeleteDocumentsRequest.doc_ids": "max_delete_ids",
    "ragtune.v1.SamplingParams.stop": "max_stop_sequences",
    "ragtune.v1.AnswerRequest.filter": "max_filter_entries",
    "ragtune.v1.Document.metadata": "max_metadata_entries",
}
# Integers with an upper bound from config; 0 means "the default" for both, so 0 is allowed.
_UPPER = {
    "ragtune.v1.AnswerRequest.top_k": "max_top_k",
    "ragtune.v1.SamplingParams.max_tokens": "max_tokens",
}
_INTEGERS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}


def check_request(request: Message, limits: Limits) -> None:
    """Raise InvalidArgument for the first field of ``request`` over its limit."""
    size = request.ByteSize()
    if size > limits.max_message_bytes:
        raise InvalidArgument(
            f"is {size} bytes; the limit is {limits.max_message_bytes}", field="request"
        )
    _check_message(request, "", limits)


def _check_message(message: Message, prefix: str, limits: Limits) -> None:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if _is_map(field):
            _check_map(field, value, path, limits)
        elif field.is_repeated:
            limit = getattr(limits, _ITEMS.get(field.full_name, "max_list_items"))
            _check_count(len(value), path, limit)
            for i, item in enumerate(value):
                _check_value(field, item, f"{path}[{i}]", limits)
        else:
            _check_value(field, value, path, limits)


def _check_value(field: FieldDescriptor, value: Any, path: str, limits: Limits) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        _check_message(value, f"{path}.", limits)
    elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        _check_chars(value, path, getattr(limits, _CHARS.get(field.full_name, "max_field_chars")))
    elif field.enum_type is not None:
        if field.enum_type.values_by_number.get(value) is None:
            names = ", ".join(v.name for v in field.enum_type.values)
            raise InvalidArgument(f"unknown value {value}; one of {names}", field=path)
    elif field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        if not math.isfinite(value):
            raise InvalidArgument("must be a finite number", field=path)
    elif field.type in _INTEGERS and field.full_name in _UPPER:
        limit = getattr(limits, _UPPER[field.full_name])
        if not 0 <= value <= limit:
            raise InvalidArgument(
                f"must be between 0 (the default) and {limit}, got {value}", field=path
            )


def _is_map(field: FieldDescriptor) -> bool:
    entry: Descriptor | None = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _check_map(field: FieldDescriptor, value: Any, path: str, limits: Limits) -> None:
    _check_count(len(value), path, getattr(limits, _ITEMS.get(field.full_name, "max_list_items")))
    assert field.message_type is not None  # a map field's entry type
    value_field = field.message_type.fields_by_name["value"]
    for key, item in value.items():
        _check_chars(key, f"{path} (a key)", limits.max_key_chars)
        if value_field.type == FieldDescriptor.TYPE_STRING:
            _check_chars(item, f"{path} (a value)", limits.max_value_chars)
        else:
            _check_value(value_field, item, f"{path}[{key[:64]}]", limits)


def _check_count(count: int, path: str, limit: int) -> None:
    if count > limit:
        raise InvalidArgument(f"has {count} entries; the limit is {limit}", field=path)


def _check_chars(value: str | bytes, path: str, limit: int) -> None:
    if len(value) > limit:
        unit = "bytes" if isinstance(value, bytes) else "characters"
        raise InvalidArgument(f"is {len(value)} {unit}; the limit is {limit}", field=path)


def check_ingest_size(documents: Any, limits: Limits) -> None:
    """The documents of one Ingest call, serialized, within ``max_ingest_bytes``."""
    size = sum(doc.ByteSize() for doc in documents)
    if size > limits.max_ingest_bytes:
        raise InvalidArgument(
            f"are {size} bytes in all; the limit per call is {limits.max_ingest_bytes}",
            field="documents",
        )


def limited(rpc: Callable[..., Any]) -> Callable[..., Any]:
    """Check the request of a gateway RPC (a method of a class with ``config.limits``)
    against the limits before the method runs; works on unary and streaming methods."""
    if inspect.isasyncgenfunction(rpc):

        @functools.wraps(rpc)
        async def stream(self: Any, request: Message, *args: Any, **kwargs: Any) -> Any:
            check_request(request, self.config.limits)
            async for message in rpc(self, request, *args, **kwargs):
                yield message

        return stream

    @functools.wraps(rpc)
    async def unary(self: Any, request: Message, *args: Any, **kwargs: Any) -> Any:
        check_request(request, self.config.limits)
        return await rpc(self, request, *args, **kwargs)

    return unary
