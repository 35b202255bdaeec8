"""Rerank service configuration."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RerankConfig(BaseModel):
    model_path: str = Field(
        description="Local directory of a sentence-transformers CrossEncoder (bge-reranker, "
        "ms-marco-MiniLM, or one trained with `ragtune train-reranker`). No pretrained "
        "cross-encoder can be downloaded on the build machine."
    )
    model_name: str = Field(default="", description="Name reported to clients; default: dir name.")
    device: str = Field(default="cpu")
    max_length: int | None = Field(
        default=None, ge=8, description="Tokens per (query, passage) pair; None: the model's own."
    )
    normalize: bool = Field(
        default=False, description="Map scores to (0, 1) with a sigmoid instead of raw logits."
    )
    batch_size: int = Field(default=32, ge=1, description="Pairs per forward pass.")
    max_batch_tokens: int = Field(
        default=16384, ge=1, description="Concurrent requests are batched up to this many tokens."
    )
    max_wait_ms: float = Field(default=5.0, ge=0)
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for the model; None: every core the replica may use (Ray "
        "would otherwise allow one thread per whole CPU requested).",
    )
    max_passages: int = Field(default=1000, ge=1)
    max_text_chars: int = Field(default=32_000, ge=1)
