"""Ray Serve application: ``import_path: ragtune.rerank.app:build``."""

from __future__ import annotations

from typing import Any

from ragtune.common.serving import build_application
from ragtune.rerank.config import RerankConfig
from ragtune.rerank.service import RerankService
from ragtune.v1 import rerank_pb2

DEPLOYMENT = "Rerank"


def build(args: dict[str, Any]):
    return build_application(
        args,
        config_cls=RerankConfig,
        service_cls=RerankService,
        descriptor=rerank_pb2.DESCRIPTOR.services_by_name["Rerank"],
        deployment_name=DEPLOYMENT,
    )
