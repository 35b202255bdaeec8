"""Ray Serve application: ``import_path: ragtune.generation.app:build``."""

from __future__ import annotations

from typing import Any

from ragtune.common.serving import build_application
from ragtune.generation.config import GenerationConfig
from ragtune.generation.service import GenerationService
from ragtune.v1 import generation_pb2

DEPLOYMENT = "Generation"


def build(args: dict[str, Any]):
    return build_application(
        args,
        config_cls=GenerationConfig,
        service_cls=GenerationService,
        descriptor=generation_pb2.DESCRIPTOR.services_by_name["Generation"],
        deployment_name=DEPLOYMENT,
    )
