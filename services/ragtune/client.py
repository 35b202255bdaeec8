"""A small synchronous client for the gateway, used by the CLI and the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from ragtune.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generation_pb2

PATHS = {
    "auto": common_pb2.PATH_AUTO,
    "rag": common_pb2.PATH_RAG,
    "tuned": common_pb2.PATH_TUNED,
    "hybrid": common_pb2.PATH_HYBRID,
}


class GatewayClient:
    """Calls the Gateway through Serve's gRPC proxy (which needs ``application: gateway``)."""

    def __init__(
        self, target: str, api_key: str, *, application: str = "gateway", timeout_s: float = 120
    ) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.metadata = [("application", application)]
        if api_key:
            self.metadata.append(("authorization", f"Bearer {api_key}"))
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=self.timeout_s)

    def answer(
        self, question: str, *, path: str = "auto", **fields: Any
    ) -> gateway_pb2.AnswerResponse:
        return self._call(
            "Answer", gateway_pb2.AnswerRequest(question=question, path=PATHS[path], **fields)
        )

    def answer_stream(
        self, question: str, *, path: str = "auto", **fields: Any
    ) -> Iterator[gateway_pb2.AnswerEvent]:
        request = gateway_pb2.AnswerRequest(question=question, path=PATHS[path], **fields)
        return self.stub.AnswerStream(request, metadata=self.metadata, timeout=self.timeout_s)

    def ingest(
        self, collection: str, documents: list[gateway_pb2.Document], *, create: bool = True
    ) -> gateway_pb2.IngestResponse:
        return self._call(
            "Ingest",
            gateway_pb2.IngestRequest(
                collection=collection, documents=documents, create_collection=create
            ),
        )

    def list_collections(self):
        return self._call("ListCollections", gateway_pb2.GatewayListCollectionsRequest())

    def create_collection(self, name: str):
        return self._call("CreateCollection", gateway_pb2.GatewayCollectionRequest(name=name))

    def delete_collection(self, name: str):
        return self._call("DeleteCollection", gateway_pb2.GatewayCollectionRequest(name=name))

    def list_adapters(self):
        return self._call("ListAdapters", generation_pb2.ListAdaptersRequest())

    def load_adapter(self, name: str, source: str = ""):
        return self._call(
            "LoadAdapter", generation_pb2.LoadAdapterRequest(name=name, source=source)
        )

    def unload_adapter(self, name: str):
        return self._call("UnloadAdapter", generation_pb2.UnloadAdapterRequest(name=name))

    def feedback(self, request_id: str, rating: int, comment: str = ""):
        return self._call(
            "Feedback",
            gateway_pb2.FeedbackRequest(request_id=request_id, rating=rating, comment=comment),
        )

    def usage(self, since: str = "", until: str = ""):
        return self._call("Usage", gateway_pb2.UsageRequest(since=since, until=until))
