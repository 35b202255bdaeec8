"""Ray Serve application: ``import_path: ragtune.generation.app:build``.

On top of the generic gRPC ingress, requests that name an adapter go through Serve's model
multiplexing: the replica registers the adapter as one of its multiplexed models, so Serve's
router sends later requests for it (the gateway sets ``multiplexed_model_id``) preferably to
replicas that already hold it. The service's own LRU decides residency; Serve's wrapper is
given the same capacity and sees the same sequence of uses, so both evict alike.
"""

from __future__ import annotations

from typing import Any

from ragtune.common.serving import continue_trace, ingress_class, report_errors
from ragtune.generation.config import GenerationConfig
from ragtune.generation.service import GenerationService
from ragtune.v1 import generation_pb2

DEPLOYMENT = "Generation"


def build(args: dict[str, Any]):
    from ray import serve

    config = GenerationConfig.model_validate(args or {})
    base = ingress_class(
        GenerationService,
        GenerationService,
        generation_pb2.DESCRIPTOR.services_by_name["Generation"],
    )

    class GenerationDeployment(base):
        @serve.multiplexed(max_num_models_per_replica=config.max_resident_adapters)
        async def _multiplexed_adapter(self, name: str) -> str:
            await self.service.ensure_resident(name)
            return name

        async def _place(self, request, grpc_context, trace_headers) -> None:
            if request.adapter:
                with report_errors(grpc_context), continue_trace(grpc_context, trace_headers):
                    await self._multiplexed_adapter(request.adapter)

        async def Generate(self, request, grpc_context=None, *, _trace=None):
            await self._place(request, grpc_context, _trace)
            return await base.Generate(self, request, grpc_context, _trace=_trace)

        async def GenerateStream(self, request, grpc_context=None, *, _trace=None):
            await self._place(request, grpc_context, _trace)
            async for message in base.GenerateStream(self, request, grpc_context, _trace=_trace):
                yield message

    return serve.deployment(GenerationDeployment, name=DEPLOYMENT).bind(config)
