"""Generation service configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from ragtune.common.telemetry import TelemetryConfig


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
    engine: str = Field(
        default="transformers",
        description="'transformers' (transformers + PEFT: CPU default, GPU fallback) or 'vllm' "
        "(production GPUs; needs the `gpu` extra).",
    )
    device: str = Field(default="cpu", description="torch device for the transformers engine.")
    dtype: str = Field(
        default="float32",
        description="float32, float16 or bfloat16 (vllm also takes 'auto': the model's own).",
    )
    max_batch: int = Field(
        default=32, ge=1, description="transformers engine: most requests decoded together."
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="vllm: GPUs per replica.")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="vllm: share of GPU memory for weights + KV cache."
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="vllm: longest prompt + output; None: the model's own."
    )
    max_loras: int = Field(
        default=4, ge=1, description="vllm: adapters that can run in one batch (GPU slots)."
    )
    max_cpu_loras: int | None = Field(
        default=None, ge=1, description="vllm: adapters cached in CPU memory; None: max_loras."
    )
    enforce_eager: bool = Field(
        default=False, description="vllm: skip CUDA graphs (faster start, slower decode)."
    )
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
    max_resident_adapters: int = Field(
        default=8,
        ge=1,
        description="Adapters kept loaded per replica; loading one more evicts the least "
        "recently used (once its running requests finish). Also Serve's multiplexing limit.",
    )
    adapter_cache_dir: str | None = Field(
        default=None,
        description="Where adapters loaded from object storage (fsspec URLs) are copied. "
        "None: a 'remote' folder next to adapters_dir, or a temporary folder.",
    )
    default_max_tokens: int = Field(default=128, ge=1)
    max_tokens_limit: int = Field(default=2048, ge=1, description="Largest max_tokens accepted.")
    max_prompt_chars: int = Field(default=64_000, ge=1)

    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,
        description="Tracing of this service (see docs/observability.md).",
    )

    @model_validator(mode="after")
    def _names(self) -> GenerationConfig:
        if not self.model_name:
            from ragtune.generation.adapters import base_model_name

            self.model_name = base_model_name(Path(self.model_path))
        if self.engine not in {"transformers", "vllm"}:
            raise ValueError(f"engine must be 'transformers' or 'vllm', got {self.engine!r}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens exceeds max_tokens_limit")
        return self
