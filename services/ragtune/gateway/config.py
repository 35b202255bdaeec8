"""Gateway configuration."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class ServiceNames(BaseModel):
    """Serve application names of the services the gateway calls."""

    embedding: str = "embedding"
    retrieval: str = "retrieval"
    rerank: str = "rerank"
    generation: str = "generation"


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


class GatewayConfig(BaseModel):
    keys_file: str = Field(description="YAML file of hashed API keys (`ragtune keys create`).")
    default_collection: str = Field(
        default="default", description="Used when a request names none."
    )
    top_k: int = Field(default=4, ge=1, le=100, description="Passages given to the model.")
    max_top_k: int = Field(default=100, ge=1)
    rerank: bool = Field(
        default=False,
        description="Rerank retrieved candidates with the rerank application. Off by default "
        "locally: no pretrained cross-encoder is available offline, so the default deployment "
        "has no rerank application.",
    )
    rerank_candidates: int = Field(
        default=20, ge=1, description="Candidates retrieved for reranking."
    )
    max_question_chars: int = Field(default=4000, ge=1)
    max_documents_per_ingest: int = Field(default=1000, ge=1)
    max_document_chars: int = Field(default=2_000_000, ge=1)
    default_max_tokens: int = Field(default=96, ge=1)
    embed_batch_size: int = Field(default=64, ge=1)
    snippet_chars: int = Field(default=240, ge=0)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    services: ServiceNames = Field(default_factory=ServiceNames)
