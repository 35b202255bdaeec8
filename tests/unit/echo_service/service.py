"""A trivial service: serves the Rerank proto by keeping the passages' order."""

from __future__ import annotations

from ragtune.v1 import rerank_pb2
from tests.unit.echo_service.config import EchoConfig


class EchoService:
    def __init__(self, config: EchoConfig) -> None:
        self.config = config

    async def Rerank(self, request: rerank_pb2.RerankRequest) -> rerank_pb2.RerankResponse:
        results = [
            rerank_pb2.RerankResult(index=i, score=float(-i)) for i in range(len(request.passages))
        ]
        return rerank_pb2.RerankResponse(results=results[: request.top_n or None])
