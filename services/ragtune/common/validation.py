"""Small input checks shared by services; each raises InvalidArgument naming the field."""

from __future__ import annotations

import re
from collections.abc import Sequence, Sized

from ragtune.common.errors import InvalidArgument

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument("must not be empty", field=field)
    if not _NAME.match(value):
        raise InvalidArgument(
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field=field,
        )
    return value


def check_count(items: Sized, field: str, noun: str, *, limit: int) -> None:
    """One to ``limit`` items (``noun``s) in a request: the configured limit per call."""
    if not items:
        raise InvalidArgument(f"must contain at least one {noun}", field=field)
    if len(items) > limit:
        raise InvalidArgument(
            f"has {len(items)} {noun}s; the limit per call is {limit}", field=field
        )


def check_texts(texts: Sequence[str], field: str, *, max_count: int, max_chars: int) -> list[str]:
    """The texts, as a list, once each is checked."""
    check_count(texts, field, "text", limit=max_count)
    for i, text in enumerate(texts):
        check_text(text, f"{field}[{i}]", max_chars=max_chars)
    return list(texts)


def check_text(text: str, field: str, *, max_chars: int) -> None:
    if not text.strip():
        raise InvalidArgument("must not be empty", field=field)
    if len(text) > max_chars:
        raise InvalidArgument(f"is {len(text)} characters; the limit is {max_chars}", field=field)


def check_range(value: int, field: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(f"must be between {low} and {high}, got {value}", field=field)
    return value
