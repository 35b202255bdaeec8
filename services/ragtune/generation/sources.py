"""Where ``LoadAdapter(source=...)`` may read: the configured adapter roots, nowhere else.

A source outside every root is refused with one message whatever is (or is not) at that path,
so no caller can probe the server. A local source is checked twice: as written with ``..``
collapsed (outside: refused before the file system is touched), then with its symlinks resolved
(what is read is the resolved path). A URL is compared segment by segment with the object-store
roots; a ``..`` segment or an fsspec chain (``a::b``) is refused outright.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ragtune.common.errors import InvalidArgument

MAX_SOURCE_CHARS = 1024
MAX_NAME_CHARS = 255  # one path component (NAME_MAX on Linux): longer ones fail in the kernel


def _url_parts(url: str) -> tuple[str, list[str]]:
    scheme, _, rest = url.partition("://")
    return scheme.lower(), [s for s in rest.split("/") if s not in ("", ".")]


def is_local(source: str) -> bool:
    return "://" not in source or source.startswith("file://")


class SourceRoots:
    """Local folders and object-store prefixes (``s3://bucket/prefix/``) adapters may come from."""

    def __init__(self, roots: Iterable[str]) -> None:
        self.roots = [r for r in dict.fromkeys(roots) if r]
        local = [r.removeprefix("file://") for r in self.roots if is_local(r)]
        # Each root as written and resolved: a source is first checked as written (`..`
        # collapsed, nothing read), then with its symlinks resolved.
        self._local = list(
            dict.fromkeys(Path(f(r)) for r in local for f in (os.path.abspath, os.path.realpath))
        )
        self._remote = [_url_parts(r) for r in self.roots if not is_local(r)]

    def confine(self, source: str) -> str:
        """What to read for ``source``: a local path with symlinks resolved, or the URL as given.
        InvalidArgument (field ``source``) if it is too long, malformed or outside every root."""
        if len(source) > MAX_SOURCE_CHARS:
            raise InvalidArgument(
                f"is {len(source)} characters; the limit is {MAX_SOURCE_CHARS}", field="source"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in source):
            raise InvalidArgument("must not contain control characters", field="source")
        if is_local(source):
            path = source.removeprefix("file://")
            if any(len(part) > MAX_NAME_CHARS for part in path.split("/")):
                raise InvalidArgument(
                    f"has a path component over {MAX_NAME_CHARS} characters", field="source"
                )
            if self._inside(Path(os.path.abspath(path))):
                real = Path(os.path.realpath(path))
                if self._inside(real):
                    return str(real)
        elif "::" not in source:
            scheme, parts = _url_parts(source)
            if ".." not in parts and any(
                scheme == root_scheme and parts[: len(root_parts)] == root_parts
                for root_scheme, root_parts in self._remote
            ):
                return source
        raise self.outside()

    def _inside(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self._local)

    def outside(self) -> InvalidArgument:
        where = ", ".join(self.roots) or "none configured"
        return InvalidArgument(
            f"must be a folder or URL under one of the adapter roots ({where}); "
            "the generation config's adapter_roots lists them",
            field="source",
        )
