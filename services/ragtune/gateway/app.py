"""Ray Serve application (its `import_path` is in ragtune.common.services: `GATEWAY`).

The gateway reaches the other applications through Serve deployment handles, each wrapped in
its typed client; names come from the service table.
"""

from __future__ import annotations

from typing import Any

from ragtune.common.clients import HandleTransport
from ragtune.common.services import EMBEDDING, GATEWAY, GENERATION, RERANK, RETRIEVAL, ServiceSpec
from ragtune.common.serving import build_application
from ragtune.gateway.config import GatewayConfig
from ragtune.gateway.service import GatewayService


def _handle(spec: ServiceSpec[Any]) -> HandleTransport:
    return HandleTransport(spec.name, spec.deployment)


def _with_handles(config: GatewayConfig) -> GatewayService:
    return GatewayService(
        config,
        embedding=EMBEDDING.connect(_handle(EMBEDDING)),
        retrieval=RETRIEVAL.connect(_handle(RETRIEVAL)),
        generation=GENERATION.connect(_handle(GENERATION)),
        rerank=RERANK.connect(_handle(RERANK)) if config.rerank else None,
    )


def build(args: dict[str, Any]):
    return build_application(args, GATEWAY, GatewayService, factory=_with_handles)
