"""Hypothesis strategies built from protobuf descriptors: any message of any public request,
arbitrary and at the boundaries, without code per message.

Each field is left unset or drawn by type, either *plausible* (names the services know, short
text, small numbers, declared enum values: what gets past validation into the pipeline) or
*hostile*: strings empty, unicode and at and past the configured limits, integers at their
type's and the limits' boundaries, floats including NaN and infinities, enums including unknown
numbers, repeated fields and maps just past a limit; nested messages down to a depth limit. A
message is plausible throughout, plausible with one hostile field (each check on its own), or
hostile throughout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

MAX_DEPTH = 3
Hints = Mapping[str, Sequence[Any]]
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32, UINT64 = (0, 2**32 - 1), (0, 2**64 - 1)
_RANGES = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
}
# Plausible strings: names the test gateway knows (its collection, the dev adapters), values
# its checks accept.
PLAUSIBLE = ["kb", "default", "pirate", "json-answer", "tldr", "flat", "ip", "json", "2026-06-01",
             "kestrel", "lyon", "When did the Lyon office open?", "Kestrel battery?"]  # fmt: skip
# Strings a service gives meaning to: valid names, known collections and adapters, dates,
# paths, and hostile ones (traversal, control characters, markup closing a prompt block).
WORDS = [
    "kb", "default", "demo", "pirate", "json-answer", "tldr", "acme", "globex", "flat", "hnsw",
    "ip", "l2", "json", "summarization", "2026-01-01", "0001-01-01", "9999-12-31", "2026-02-30",
    "20260101", "2026-W01-1", "../../etc/passwd", "/tmp", "s3://bucket/x", "a\x00b", "\u202e",
    "</context>", "x" * 64, "é" * 65, "🙂",
]  # fmt: skip


class Boundaries:
    """The sizes a fuzzer aims at: every configured limit, one past it, and a few more."""

    def __init__(self, limits: Iterable[int]) -> None:
        values = {0, 1, 2, 63, 64, 65, 100, 256, 257}
        for limit in limits:
            values |= {limit - 1, limit, limit + 1}
        self.sizes = sorted(v for v in values if v >= 0)


def _string(bounds: Boundaries, *, huge: int) -> st.SearchStrategy[str]:
    sized = st.tuples(
        st.sampled_from([s for s in bounds.sizes if s <= huge]),
        st.sampled_from(["a", "é", "\U0001f642", " "]),
    ).map(lambda t: t[1] * t[0])
    return st.one_of(st.just(""), st.sampled_from(WORDS), st.text(max_size=40), sized)


def _integer(field: FieldDescriptor, bounds: Boundaries) -> st.SearchStrategy[int]:
    low, high = _RANGES[field.type]
    edges = [v for v in (low, high, -1, *bounds.sizes) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _plausible(field: FieldDescriptor, hints: Hints) -> st.SearchStrategy[Any]:
    if field.name in hints:
        return st.sampled_from(list(hints[field.name]))
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return st.one_of(
            st.sampled_from(PLAUSIBLE),
            st.text(st.characters(codec="utf-8"), min_size=1, max_size=30),
        )
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=8)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(0, 1)
    return st.integers(0, 8)


def _hostile(field: FieldDescriptor, bounds: Boundaries, huge: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _string(bounds, huge=huge)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from([-1, max(known) + 1, 99]))
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        width = 32 if kind == FieldDescriptor.TYPE_FLOAT else 64
        return st.floats(width=width, allow_nan=True, allow_infinity=True)
    return _integer(field, bounds)


def _scalar(
    field: FieldDescriptor, bounds: Boundaries, depth: int, huge: int, hostile: bool, hints: Hints
):
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, bounds, depth=depth + 1, huge=huge, hints=hints)
    return _hostile(field, bounds, huge) if hostile else _plausible(field, hints)


def _repeated(item, bounds: Boundaries, hostile: bool):
    """A few items, or (hostile, rarely) one item repeated to a boundary count."""
    few = st.lists(item, max_size=3)
    if not hostile:
        return few
    counts = [n for n in bounds.sizes if 3 < n <= 1024]
    return st.one_of(few, st.tuples(item, st.sampled_from(counts)).map(lambda t: [t[0]] * t[1]))


def _map(
    field: FieldDescriptor, bounds: Boundaries, depth: int, huge: int, hostile: bool, hints: Hints
):
    entry = field.message_type
    key = _scalar(entry.fields_by_name["key"], bounds, depth, huge, hostile, {})
    value = _scalar(entry.fields_by_name["value"], bounds, depth, huge, hostile, {})
    few = st.dictionaries(key, value, max_size=3)
    if not hostile:
        return few
    counts = [n for n in bounds.sizes if 3 < n <= 1024]
    many = st.tuples(value, st.sampled_from(counts)).map(
        lambda t: {f"k{i}": t[0] for i in range(t[1])}
    )
    return st.one_of(few, many)


def _field(
    field: FieldDescriptor, bounds: Boundaries, depth: int, huge: int, hostile: bool, hints: Hints
):
    entry: Descriptor | None = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        return _map(field, bounds, depth, huge, hostile, hints)
    item = _scalar(field, bounds, depth, huge, hostile, hints)
    if field.is_repeated:
        return _repeated(item, bounds, hostile)
    return item


def _build(message_class: type[Message], values: dict[str, Any]) -> Message:
    message = message_class()
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, Message):
            getattr(message, name).CopyFrom(value)
        elif isinstance(value, dict):
            target = getattr(message, name)
            for k, v in value.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif isinstance(value, list):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def messages(
    descriptor: Descriptor,
    bounds: Boundaries,
    *,
    depth: int = 0,
    huge: int = 100_000,
    hints: Hints | None = None,
) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type: plausible (half of them), plausible but for one
    hostile field, or hostile throughout. ``hints`` gives plausible values by field name (the
    collections and adapters a test's services hold); below ``MAX_DEPTH`` nested messages are
    left unset; ``huge`` caps the longest string drawn."""
    hints = hints or {}
    message_class = GetMessageClass(descriptor)
    if depth >= MAX_DEPTH:
        return st.just(message_class())
    fields = list(descriptor.fields)

    def draw_fields(hostile: bool) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {
                f.name: st.one_of(st.none(), _field(f, bounds, depth, huge, hostile, hints))
                for f in fields
            }
        )

    def one_hostile(values: dict[str, Any], field: FieldDescriptor) -> st.SearchStrategy:
        hostile = _field(field, bounds, depth, huge, True, hints)
        return hostile.map(lambda value: {**values, field.name: value})

    plausible = draw_fields(False)
    mixed = (
        st.tuples(plausible, st.sampled_from(fields)).flatmap(lambda t: one_hostile(*t))
        if fields
        else plausible
    )
    return st.one_of(plausible, plausible, mixed, draw_fields(True)).map(
        lambda values: _build(message_class, values)
    )
