"""Ray Serve application: ``import_path: ragtune.gateway.app:build``.

The gateway reaches the other applications through Serve deployment handles, by name.
"""

from __future__ import annotations

from typing import Any

from ragtune.common.clients import HandleClient
from ragtune.common.serving import build_application
from ragtune.gateway.config import GatewayConfig
from ragtune.gateway.service import GatewayService
from ragtune.v1 import gateway_pb2

DEPLOYMENT = "Gateway"


def _with_handles(config: GatewayConfig) -> GatewayService:
    names = config.services
    return GatewayService(
        config,
        embedding=HandleClient(names.embedding, "Embedding"),
        retrieval=HandleClient(names.retrieval, "Retrieval"),
        generation=HandleClient(names.generation, "Generation"),
        rerank=HandleClient(names.rerank, "Rerank") if config.rerank else None,
    )


def build(args: dict[str, Any]):
    return build_application(
        args,
        config_cls=GatewayConfig,
        service_cls=GatewayService,
        descriptor=gateway_pb2.DESCRIPTOR.services_by_name["Gateway"],
        deployment_name=DEPLOYMENT,
        factory=_with_handles,
    )
