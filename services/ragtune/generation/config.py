"""Generation service configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator


class GenerationConfig(BaseModel):
    model_path: str = Field(
        description="Local Hugging Face model directory (config.json, weights, tokenizer). "
        "`ragtune devmodel` makes a tiny one for development."
    )
    model_name: str = Field(
        default="",
        description="Name of the base model; adapters declare the base they were trained on and "
        "must match it. Empty means the name in the model's ragtune-base.yaml, else the "
        "directory's name (the rule `ragtune tune` uses when it records base_model).",
    )
    engine: str = Field(default="transformers", description="'transformers' (CPU or GPU).")
    device: str = Field(default="cpu", description="torch device for the transformers engine.")
    dtype: str = Field(default="float32", description="float32, float16 or bfloat16.")
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for the model; None: every core the replica may use (Ray "
        "would otherwise allow one thread per whole CPU requested).",
    )
    adapters_dir: str | None = Field(
        default=None, description="Directory of LoRA adapters, one sub-directory each."
    )
    preload_adapters: list[str] | None = Field(
        default=None, description="Adapters loaded at start; None means every adapter found."
    )
    max_lora_rank: int = Field(default=64, ge=1, description="Adapters of higher rank are refused.")
    default_max_tokens: int = Field(default=128, ge=1)
    max_tokens_limit: int = Field(default=2048, ge=1, description="Largest max_tokens accepted.")
    max_prompt_chars: int = Field(default=64_000, ge=1)

    @model_validator(mode="after")
    def _names(self) -> GenerationConfig:
        if not self.model_name:
            from ragtune.generation.adapters import base_model_name

            self.model_name = base_model_name(Path(self.model_path))
        if self.engine != "transformers":
            raise ValueError(f"engine must be 'transformers', got {self.engine!r}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens exceeds max_tokens_limit")
        return self
