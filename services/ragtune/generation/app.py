"""Ray Serve application (its `import_path` is in ragtune.common.services: `GENERATION`).

On top of the generic gRPC ingress, requests that name an adapter go through Serve's model
multiplexing: the replica registers the adapter as one of its multiplexed models, so Serve's
router sends later requests for it (the gateway sets ``multiplexed_model_id``) preferably to
replicas that already hold it. The service's own LRU decides residency; Serve's wrapper is
given the same capacity and sees the same sequence of uses, so both evict alike.
"""

from __future__ import annotations

from typing import Any

from ragtune.common.services import GENERATION
from ragtune.common.serving import build_application, continue_trace, report_errors
from ragtune.generation.config import GenerationConfig
from ragtune.generation.service import GenerationService


def _with_multiplexing(base: type, config: GenerationConfig) -> type:
    from ray import serve

    class GenerationDeployment(base):  # type: ignore[valid-type,misc]
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

    return GenerationDeployment


def build(args: dict[str, Any]):
    return build_application(args, GENERATION, GenerationService, customize=_with_multiplexing)
