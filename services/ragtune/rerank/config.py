"""Rerank service configuration."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RerankConfig(BaseModel):
    model_path: str = Field(
        description="Local directory of a sentence-transformers CrossEncoder (bge-reranker, "
        "ms-marco-MiniLM, ...). No pretrained cross-encoder can be downloaded on the build "
        "machine, so the default local deployment leaves reranking off."
    )
    model_name: str = Field(default="", description="Name reported to clients; default: dir name.")
    device: str = Field(default="cpu")
    batch_size: int = Field(default=32, ge=1)
    max_passages: int = Field(default=1000, ge=1)
    max_text_chars: int = Field(default=32_000, ge=1)
