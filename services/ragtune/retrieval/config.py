"""Retrieval service configuration."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from ragtune.common.telemetry import TelemetryConfig


class RetrievalConfig(BaseModel):
    database_url: str = Field(
        default="sqlite:///data/ragtune.db",
        description="SQLAlchemy URL of the source of truth (SQLite file locally). FAISS indexes "
        "are rebuilt from it on start.",
    )
    max_top_k: int = Field(default=1000, ge=1, description="Largest top_k a Search may ask for.")
    max_dims: int = Field(default=8192, ge=1)
    tail_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a replica checks the change log for writes made elsewhere "
        "(other replicas) and applies them; Search with min_seq catches up at once anyway.",
    )

    faiss_threads: int | None = Field(
        default=None,
        ge=1,
        description="OpenMP threads for FAISS searches; None: the CPUs the replica reserved "
        "(Ray's OMP_NUM_THREADS: one for a fractional CPU), every core outside Ray. Whether more "
        "threads pay depends on what else shares the cores (docs/retrieval.md).",
    )
    max_search_batch: int = Field(
        default=64, ge=1, description="Concurrent plain searches answered by one FAISS call."
    )
    search_batch_wait_ms: float = Field(
        default=30.0,
        ge=0,
        description="Longest wait of a plain search for others to join its batch; never longer "
        "than the last FAISS call took, and none for a lone client (common/batching.py). Under "
        "load it lets the clients just answered come back into one batch: a flat scan of 32 "
        "queries costs little more than one of 8 (docs/retrieval.md).",
    )
    max_upsert_chunks: int = Field(default=10_000, ge=1, description="Chunks per Upsert call.")
    max_delete_documents: int = Field(default=10_000, ge=1, description="doc_ids per Delete.")
    snapshot_dir: str | None = Field(
        default=None,
        description="Folder for index snapshots (the newest is loaded on start, then the "
        "change log after it is replayed). None: indexes are rebuilt from the database.",
    )
    snapshot_interval_s: float = Field(
        default=300.0, gt=0, description="Seconds between snapshots while the log advances."
    )

    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,
        description="Tracing of this service (see docs/observability.md).",
    )

    @field_validator("database_url")
    @classmethod
    def _supported(cls, url: str) -> str:
        if not url.startswith(("sqlite", "postgresql")):
            raise ValueError("database_url must be a sqlite:/// or postgresql+psycopg:// URL")
        return url
