"""Rerank service configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ragtune.common.telemetry import TelemetryConfig


class RerankConfig(BaseModel):
    # The defaults are the offline default reranker: MaxSim over the shipped MiniLM weights,
    # fused with the first-stage order (weight tuned on SciFact train; what it gains on
    # SciFact test: docs/retrieval.md, "Measurements").
    kind: Literal["cross-encoder", "maxsim"] = Field(
        default="maxsim",
        description="'cross-encoder': a sentence-transformers CrossEncoder (bge-reranker, "
        "ms-marco-MiniLM). 'maxsim': late interaction over a bi-encoder's token embeddings; "
        "with no model_path it uses the shipped all-MiniLM-L6-v2 weights (the offline default: "
        "no pretrained cross-encoder can be downloaded on the build machine).",
    )
    model_path: str | None = Field(
        default=None, description="Local model directory; required for cross-encoder."
    )
    model_name: str = Field(default="", description="Name reported to clients; default: dir name.")
    device: str = Field(default="cpu")
    max_length: int | None = Field(
        default=None, ge=8, description="Tokens per (query, passage) pair; None: the model's own."
    )
    input_order_weight: float = Field(
        default=0.8,
        ge=0,
        description="Fuse the reranker's order with the order the passages arrived in (the "
        "first-stage ranking) by reciprocal rank: the incoming order gets this weight, the "
        "reranker's 1. 0 means the reranker's order alone (use 0 for a strong cross-encoder). "
        "0.8 was chosen for MaxSim on SciFact's train split (grid 0-5, 809 queries).",
    )
    normalize: bool = Field(
        default=False, description="Map scores to (0, 1) with a sigmoid instead of raw logits."
    )
    batch_size: int = Field(default=32, ge=1, description="Pairs per forward pass.")
    max_batch_tokens: int = Field(
        default=16384, ge=1, description="Concurrent requests are batched up to this many tokens."
    )
    max_wait_ms: float = Field(
        default=5.0, ge=0, description="Longest wait of a batch for more requests (see README)."
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for the model; None: every core the replica may use (Ray "
        "would otherwise allow one thread per whole CPU requested).",
    )
    max_passages: int = Field(default=1000, ge=1)

    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,
        description="Tracing of this service (see docs/observability.md).",
    )

    @model_validator(mode="after")
    def _path_for_cross_encoder(self) -> RerankConfig:
        if self.kind == "cross-encoder" and not self.model_path:
            raise ValueError("a cross-encoder reranker needs model_path")
        return self

    max_text_chars: int = Field(default=32_000, ge=1)
