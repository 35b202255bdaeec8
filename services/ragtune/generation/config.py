"""Generation service configuration."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from pathlib import Path
from typing import Any

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
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="vllm: passed to vLLM's AsyncEngineArgs as is, e.g. {max_loras: 4, "
        "gpu_memory_utilization: 0.9, max_model_len: 4096, tensor_parallel_size: 2}; keys are "
        "checked against AsyncEngineArgs where vLLM is installed. ragtune sets model, "
        "served_model_name, dtype, enable_lora and max_lora_rank itself (from this config), "
        "and max_loras is 4 unless given (vLLM's own default is 1).",
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
    adapter_roots: list[str] = Field(
        default_factory=list,
        description="Where LoadAdapter may read a source from, besides adapters_dir: local "
        "folders and object-store prefixes (s3://bucket/prefix/). A source outside every root "
        "(after resolving '..' and symlinks) is refused with INVALID_ARGUMENT. Empty: "
        "adapters_dir only.",
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
    database_url: str | None = Field(
        default=None,
        description="Database of the platform's adapter catalog, shared by every generation "
        "replica (SQLite file locally, PostgreSQL on a cluster): an adapter loaded on one "
        "replica is served by all, and by replicas started later. None: each replica keeps "
        "its own adapters (tests, a single replica).",
    )
    sync_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often a replica reads the adapter catalog (and reports what it holds).",
    )
    unload_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long UnloadAdapter waits for every replica to stop serving the adapter "
        "(their running requests with it finish first).",
    )
    default_max_tokens: int = Field(default=128, ge=1)
    max_tokens_limit: int = Field(default=2048, ge=1, description="Largest max_tokens accepted.")
    max_prompt_chars: int = Field(default=64_000, ge=1)

    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,
        description="Tracing of this service (see docs/observability.md).",
    )

    @model_validator(mode="after")
    def _check(self) -> GenerationConfig:
        if not self.model_name:
            from ragtune.generation.adapters import base_model_name

            self.model_name = base_model_name(Path(self.model_path))
        if self.engine not in {"transformers", "vllm"}:
            raise ValueError(f"engine must be 'transformers' or 'vllm', got {self.engine!r}")
        for root in self.adapter_roots:
            if not root.strip() or "::" in root:
                raise ValueError(f"adapter_roots: {root!r} is not a folder or a URL prefix")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens exceeds max_tokens_limit")
        if self.engine_kwargs:
            if self.engine != "vllm":
                raise ValueError(
                    "engine_kwargs is for engine 'vllm'; the transformers engine takes device, "
                    "dtype and max_batch"
                )
            check_engine_kwargs(self.engine_kwargs)
        return self


# AsyncEngineArgs that ragtune sets itself -> the config field that sets them.
RESERVED_ENGINE_ARGS = {
    "model": "model_path",
    "served_model_name": "model_name",
    "dtype": "dtype",
    "max_lora_rank": "max_lora_rank",
    "enable_lora": "",  # always on: adapters are the point of the service
}


def check_engine_kwargs(kwargs: dict[str, Any]) -> None:
    """Raise ValueError for a key ragtune sets itself or, where vLLM is installed, for a key its
    AsyncEngineArgs does not take (naming the closest one it does). Without vLLM the keys are
    left to the replica that runs it, whose config is checked again there."""
    for key in kwargs:
        if key in RESERVED_ENGINE_ARGS:
            use = RESERVED_ENGINE_ARGS[key]
            instead = f"set the config's {use!r} instead" if use else "ragtune always sets it"
            raise ValueError(f"engine_kwargs: {key!r} is set by ragtune; {instead}")
    if importlib.util.find_spec("vllm") is None:
        return
    from vllm import AsyncEngineArgs

    known = sorted(f.name for f in dataclasses.fields(AsyncEngineArgs))
    for key in kwargs:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see vLLM's AsyncEngineArgs"
            raise ValueError(f"engine_kwargs: vLLM's AsyncEngineArgs has no {key!r}; {hint}")
