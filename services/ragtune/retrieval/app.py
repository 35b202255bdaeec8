"""Ray Serve application: ``import_path: ragtune.retrieval.app:build``."""

from __future__ import annotations

from typing import Any

from ragtune.common.serving import build_application
from ragtune.retrieval.config import RetrievalConfig
from ragtune.retrieval.service import RetrievalService
from ragtune.v1 import retrieval_pb2

DEPLOYMENT = "Retrieval"


def build(args: dict[str, Any]):
    return build_application(
        args,
        config_cls=RetrievalConfig,
        service_cls=RetrievalService,
        descriptor=retrieval_pb2.DESCRIPTOR.services_by_name["Retrieval"],
        deployment_name=DEPLOYMENT,
        extra_methods=("stats", "snapshot"),
    )
