"""Gateway configuration."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from ragtune.common.cost import Pricing
from ragtune.common.telemetry import TelemetryConfig
from ragtune.gateway.input_limits import Limits
from ragtune.gateway.quotas import QuotaConfig

# GatewayConfig fields that moved into ``limits``.
LEGACY_LIMITS = frozenset(
    {"max_top_k", "max_question_chars", "max_documents_per_ingest", "max_document_chars"}
)

# Output formats a reply is invalid in when cut short (GatewayConfig.structured_max_tokens).
STRUCTURED_FORMATS = frozenset({"json", "yaml", "xml", "csv"})


class ChunkingConfig(BaseModel):
    tokenizer_path: str | None = Field(
        default=None,
        description="Directory with the embedder's tokenizer.json; chunk sizes are counted in its "
        "tokens. None means the shipped all-MiniLM-L6-v2 tokenizer.",
    )
    max_tokens: int = Field(default=200, ge=16, description="Largest chunk, in tokens.")
    overlap_tokens: int = Field(default=32, ge=0)

    @model_validator(mode="after")
    def _overlap(self) -> ChunkingConfig:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError("overlap_tokens must be smaller than max_tokens")
        return self


class Cue(BaseModel):
    """A phrase in the question that asks for an adapter's behaviour ("answer in JSON")."""

    pattern: str = Field(description="Regular expression, matched case-insensitively.")
    output_format: str = ""
    task: str = ""
    tone: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value


def _default_cues() -> list[Cue]:
    return [
        Cue(pattern=r"\bjson\b", output_format="json"),
        Cue(pattern=r"\bpirate\b|\bahoy\b", tone="pirate"),
        Cue(
            pattern=r"\btl;?\s?dr\b|\bsummar(y|ise|ize)\b|\bin one (line|sentence)\b",
            task="summarization",
        ),
    ]


class CalibrationConfig(BaseModel):
    """Per-collection calibration of the probe (gateway/calibration.py, docs/routing.md)."""

    enabled: bool = True
    positives: int = Field(
        default=128, ge=8, le=1000, description="Pseudo-queries sampled from the collection."
    )
    min_chunks: int = Field(
        default=8, ge=2, description="Fewer chunks than this: the default threshold applies."
    )
    regrow: float = Field(
        default=0.25, gt=0, description="Fit again when the collection grew by this share."
    )
    debounce_s: float = Field(default=2.0, ge=0, description="Wait for an ingest burst to end.")
    cache_s: float = Field(default=5.0, ge=0, description="How long a replica reuses a fit.")
    searches_in_flight: int = Field(default=8, ge=1)
    regularization: float = Field(default=100.0, gt=0, description="Logistic regression's C.")
    min_threshold: float = 0.1
    max_threshold: float = 0.9
    default_slope: float = Field(
        default=20.0, gt=0, description="Probability slope of the default (uncalibrated) threshold."
    )


class SemanticCueConfig(BaseModel):
    """Asking for an adapter's behaviour by similarity to its example requests
    (gateway/cues.py). Fitted on the routing set's train split (docs/routing.md)."""

    enabled: bool = True
    min_similarity: float = Field(
        default=0.47, gt=0, le=1, description="Cosine similarity to an example needed."
    )
    min_margin: float = Field(
        default=0.0, ge=0, description="How much closer to an example than to a counter-example."
    )
    neighbours: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Closest examples and counter-examples a part's comparison averages over.",
    )
    topic_check: bool = Field(
        default=True,
        description="Search a part about to pick an adapter: the collection matching it better "
        "than the example makes it the question's topic, not a request.",
    )


class FeedbackConfig(BaseModel):
    """Feedback moving the router's thresholds (gateway/feedback.py, docs/routing.md)."""

    enabled: bool = True
    step: float = Field(default=0.01, gt=0, le=0.1, description="One adjustment's size.")
    max_offset: float = Field(
        default=0.1, gt=0, le=0.5, description="Furthest a threshold may move from its fit."
    )
    low_rating: int = Field(default=2, ge=1, le=4, description="Ratings at most this are bad.")


class ProbeConfig(BaseModel):
    """The retrieval-confidence probe: embed the question, search the collection, and call the
    collection able to answer when the best score and its margin pass these thresholds.

    ``min_top_score`` applies to collections not calibrated yet (fewer than
    ``calibration.min_chunks`` chunks, or a fit still running); it was fitted on the routing
    set's train split (``ragtune eval routing --calibrate``), never on its test split.
    """

    enabled: bool = True
    top_k: int = Field(default=8, ge=2, le=100, description="Hits the scores are read from.")
    min_top_score: float = Field(default=0.3865, description="Best cosine similarity needed.")
    min_margin: float = Field(
        default=0.0, description="Best score minus the mean of the other hits needed."
    )


class RouterConfig(BaseModel):
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    semantic_cues: SemanticCueConfig = Field(default_factory=SemanticCueConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    cues: list[Cue] = Field(
        default_factory=_default_cues,
        description="Phrases that ask for an output format, task or tone without the request's "
        "fields; matched against the adapters' declared metadata like the fields are.",
    )
    fallback_adapter: str = Field(
        default="",
        description="Adapter for questions the collection cannot answer that ask for no "
        "particular behaviour (a general distilled assistant). Empty: such questions take RAG, "
        "whose prompt lets the model say that the sources do not cover the question.",
    )
    prior_latency_ms: dict[str, float] = Field(
        default_factory=lambda: {"RAG": 2500.0, "TUNED": 1500.0, "HYBRID": 2600.0},
        description="Expected latency per path until the router has seen min_samples requests.",
    )
    prior_cost_micro_usd: dict[str, int] = Field(
        default_factory=lambda: {"RAG": 40, "TUNED": 25, "HYBRID": 42},
        description="Expected cost per path until the router has seen min_samples requests.",
    )
    budget_quantile: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="A path fits a latency budget when this quantile of its recent latency does.",
    )
    stats_window: int = Field(default=256, ge=8, description="Recent requests kept per path.")
    min_samples: int = Field(default=8, ge=1)
    adapter_cache_s: float = Field(
        default=5.0, ge=0, description="How long the adapter registry's listing is reused."
    )

    @model_validator(mode="after")
    def _paths(self) -> RouterConfig:
        for name in ("prior_latency_ms", "prior_cost_micro_usd"):
            if set(getattr(self, name)) != {"RAG", "TUNED", "HYBRID"}:
                raise ValueError(f"{name} needs exactly the keys RAG, TUNED and HYBRID")
        return self


class GatewayConfig(BaseModel):
    keys_file: str = Field(description="YAML file of hashed API keys (`ragtune keys create`).")
    keys_refresh_s: float = Field(
        default=2.0,
        ge=0,
        description="How often each replica re-reads the API keys (database and keys_file): "
        "a key created or revoked takes effect within this time (docs/security.md).",
    )
    default_collection: str = Field(
        default="default", description="Used when a request names none."
    )
    top_k: int = Field(default=4, ge=1, le=100, description="Passages given to the model.")
    rerank: bool = Field(
        default=False,
        description="Rerank retrieved candidates with the rerank application. Off by default "
        "locally: no pretrained cross-encoder is available offline, so the default deployment "
        "has no rerank application.",
    )
    rerank_candidates: int = Field(
        default=20, ge=1, description="Candidates retrieved for reranking."
    )
    limits: Limits = Field(
        default_factory=Limits,
        description="What one request may carry: sizes, lengths, counts (docs/operations.md).",
    )
    quotas: QuotaConfig = Field(
        default_factory=QuotaConfig,
        description="Per-tenant request rate and daily token limits (docs/security.md).",
    )
    max_in_flight: int | None = Field(
        default=64,
        ge=1,
        description="RPCs one gateway replica handles at once; one more is refused at once with "
        "RESOURCE_EXHAUSTED and retry-after-ms, rather than queued past its deadline. Keep it "
        "below the deployment's max_ongoing_requests (256), or Serve queues first. null: no "
        "limit but Serve's queue (docs/security.md#quotas-rate-limits-and-backpressure).",
    )
    default_max_tokens: int = Field(default=96, ge=1)
    structured_max_tokens: int = Field(
        default=256,
        ge=1,
        description="max_tokens when a request sets none and its adapter's output_format is "
        "structured (json, yaml, xml, csv): a reply cut mid-object is not valid.",
    )
    embed_batch_size: int = Field(default=64, ge=1)
    snippet_chars: int = Field(default=240, ge=0)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    pricing: Pricing = Field(default_factory=Pricing)
    database_url: str = Field(
        default="sqlite:///data/ledger.db",
        description="SQLAlchemy URL of the usage ledger (route decisions, costs, feedback): "
        "SQLite locally, PostgreSQL on a cluster.",
    )
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,
        description="Tracing of this service (see docs/observability.md).",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_limits(cls, data: Any) -> Any:
        """The limits that were top-level fields before ``limits`` existed still work there."""
        if isinstance(data, dict) and (moved := LEGACY_LIMITS & data.keys()):
            data = dict(data)
            limits = dict(data.get("limits") or {})
            for key in moved:
                limits.setdefault(key, data.pop(key))
            data["limits"] = limits
        return data
