"""The title and text of one file, by its type.

Markdown, plain text and reStructuredText are read as UTF-8. PDF goes through ``pypdf`` (pure
Python, no system libraries; text per page, the document's own title when it has one). HTML goes
through Beautiful Soup, which finds the encoding (``<meta charset>``, BOM, or a guess), and
``markdownify``, which keeps headings, lists and tables as Markdown so that the gateway's
chunker splits along the page's structure; scripts, styles and navigation are dropped. The two
libraries are imported on first use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# suffix -> type (the `type` in every chunk's metadata)
FILE_TYPES: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".rst": "rst",
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
}
SUPPORTED = ", ".join(FILE_TYPES)
_HTML_DROPPED = ["script", "style", "noscript", "template", "nav", "svg", "iframe", "head"]
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1+\s*$")


class Unreadable(Exception):
    """A file of a supported type that cannot be read; the message says why."""


class NoText(Exception):
    """A file that holds no text to ingest (empty, or only markup)."""


@dataclass(frozen=True)
class Extracted:
    title: str
    text: str


def file_type(path: Path) -> str:
    """The type of ``path`` by its suffix; "" when not supported."""
    return FILE_TYPES.get(path.suffix.lower(), "")


def extract(path: Path, kind: str) -> Extracted:
    """Title and text of the file at ``path`` of type ``kind`` (not ``jsonl``).

    Raises ``Unreadable`` (the file is damaged, encrypted, binary or not UTF-8) or ``NoText``.
    """
    if kind == "pdf":
        found = _pdf(path)
    elif kind == "html":
        found = _html(path)
    else:
        text = decode_utf8(path.read_bytes())
        found = Extracted(_markup_title(text, rst=kind == "rst"), text)
    if not found.text.strip():
        if kind == "pdf":
            raise Unreadable("no text layer (scanned pages?): run OCR on it first")
        raise NoText("no text")
    return Extracted(found.title or path.stem, found.text)


def decode_utf8(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise Unreadable("binary content (NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise Unreadable(
            f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "convert it to UTF-8, e.g. with iconv"
        ) from None


def _markup_title(text: str, *, rst: bool) -> str:
    """A Markdown ``# heading``, or a reStructuredText title (a line underlined with =, -, ...)."""
    lines = text.splitlines()
    for n, line in enumerate(lines[:200]):
        if line.startswith("# "):
            return line[2:].strip()
        if rst and line.strip() and n + 1 < len(lines):
            under = lines[n + 1]
            if _RST_UNDERLINE.match(under) and len(under.rstrip()) >= len(line.rstrip()):
                return line.strip()
    return ""


def _pdf(path: Path) -> Extracted:
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("encrypted PDF: decrypt it first (e.g. qpdf --decrypt)")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except Unreadable:
        raise
    except Exception as err:  # a damaged PDF fails in many ways inside pypdf, none of them ours
        raise Unreadable(f"not a readable PDF ({type(err).__name__}: {err})") from None
    return Extracted(str(title or "").strip(), "\n\n".join(p.strip() for p in pages if p.strip()))


def _html(path: Path) -> Extracted:
    from bs4 import BeautifulSoup
    from markdownify import ATX, MarkdownConverter

    data = path.read_bytes()
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise Unreadable("binary content (NUL bytes), not HTML")
    soup = BeautifulSoup(data, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not title and (h1 := soup.find("h1")):
        title = h1.get_text(" ", strip=True)
    for tag in soup(_HTML_DROPPED):
        tag.decompose()
    # Links and images keep their text only: URLs would only add noise to the embeddings.
    converter = MarkdownConverter(heading_style=ATX, bullets="-", strip=["a", "img"])
    markdown = converter.convert_soup(soup.body or soup)
    return Extracted(title, re.sub(r"\n{3,}", "\n\n", markdown).strip())
