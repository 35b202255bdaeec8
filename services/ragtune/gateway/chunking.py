"""Split documents into chunks sized in the embedder's tokens (semantic-text-splitter).

semantic-text-splitter is structure-aware (Markdown headings, paragraphs, sentences), counts
size with a Hugging Face tokenizer, and is a small, maintained Rust library with no heavy deps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragtune.gateway.config import ChunkingConfig


class Chunker:
    def __init__(self, config: ChunkingConfig) -> None:
        self.config = config
        self._splitter: Any = None  # a MarkdownSplitter once warmed up

    def warm_up(self) -> None:
        if self._splitter is not None:
            return
        from semantic_text_splitter import MarkdownSplitter
        from tokenizers import Tokenizer

        if self.config.tokenizer_path:
            path = Path(self.config.tokenizer_path)
        else:
            from ragtune.common.models import default_minilm_path

            path = Path(default_minilm_path())
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_truncation()
        self._splitter = MarkdownSplitter.from_huggingface_tokenizer(
            tokenizer, self.config.max_tokens, overlap=self.config.overlap_tokens
        )

    def split(self, text: str) -> list[str]:
        self.warm_up()
        return [c for c in self._splitter.chunks(text) if c.strip()]
