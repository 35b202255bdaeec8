"""Configuration of the OpenAI-compatible API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ragtune.common.telemetry import TelemetryConfig


class OpenAIConfig(BaseModel):
    collection: str = Field(
        default="",
        description="Collection searched when a request names none (its `ragtune.collection`); "
        "empty: the gateway's default_collection.",
    )
    models_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="How long the gateway's model list (base model and adapters) is reused to "
        "tell an adapter from an unknown model; a name not in it is looked up again first.",
    )
    owned_by: str = Field(default="ragtune", description="`owned_by` of every model listed.")
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,
        description="Tracing of this application (see docs/observability.md).",
    )
