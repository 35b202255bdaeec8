"""Ray Serve application: ``import_path: ragtune.embedding.app:build``."""

from __future__ import annotations

from typing import Any

from ragtune.common.serving import build_application
from ragtune.embedding.config import EmbeddingConfig
from ragtune.embedding.service import EmbeddingService
from ragtune.v1 import embedding_pb2

DEPLOYMENT = "Embedding"


def build(args: dict[str, Any]):
    return build_application(
        args,
        config_cls=EmbeddingConfig,
        service_cls=EmbeddingService,
        descriptor=embedding_pb2.DESCRIPTOR.services_by_name["Embedding"],
        deployment_name=DEPLOYMENT,
        extra_methods=("stats",),
    )
