"""A small synchronous client for the gateway, used by the CLI and the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from ragtune.common.services import GATEWAY
from ragtune.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generation_pb2, retrieval_pb2

PATHS = {
    "auto": common_pb2.PATH_AUTO,
    "rag": common_pb2.PATH_RAG,
    "tuned": common_pb2.PATH_TUNED,
    "hybrid": common_pb2.PATH_HYBRID,
}


class GatewayClient:
    """Calls the Gateway through Serve's gRPC proxy (which routes on the ``application`` metadata)."""

    def __init__(
        self, target: str, api_key: str, *, application: str = GATEWAY.name, timeout_s: float = 120
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

    @property
    def _options(self) -> dict[str, Any]:
        return {"metadata": self.metadata, "timeout": self.timeout_s}

    def answer(
        self, question: str, *, path: str = "auto", **fields: Any
    ) -> gateway_pb2.AnswerResponse:
        request = gateway_pb2.AnswerRequest(question=question, path=PATHS[path], **fields)
        return self.stub.Answer(request, **self._options)

    def answer_stream(
        self, question: str, *, path: str = "auto", **fields: Any
    ) -> Iterator[gateway_pb2.AnswerEvent]:
        request = gateway_pb2.AnswerRequest(question=question, path=PATHS[path], **fields)
        return self.stub.AnswerStream(request, **self._options)

    def ingest(
        self, collection: str, documents: list[gateway_pb2.Document], *, create: bool = True
    ) -> gateway_pb2.IngestResponse:
        request = gateway_pb2.IngestRequest(
            collection=collection, documents=documents, create_collection=create
        )
        return self.stub.Ingest(request, **self._options)

    def list_collections(self) -> retrieval_pb2.ListCollectionsResponse:
        request = gateway_pb2.GatewayListCollectionsRequest()
        return self.stub.ListCollections(request, **self._options)

    def create_collection(self, name: str) -> retrieval_pb2.CreateCollectionResponse:
        request = gateway_pb2.GatewayCollectionRequest(name=name)
        return self.stub.CreateCollection(request, **self._options)

    def delete_collection(self, name: str) -> retrieval_pb2.DeleteCollectionResponse:
        request = gateway_pb2.GatewayCollectionRequest(name=name)
        return self.stub.DeleteCollection(request, **self._options)

    def list_adapters(self) -> generation_pb2.ListAdaptersResponse:
        return self.stub.ListAdapters(generation_pb2.ListAdaptersRequest(), **self._options)

    def load_adapter(self, name: str, source: str = "") -> generation_pb2.LoadAdapterResponse:
        request = generation_pb2.LoadAdapterRequest(name=name, source=source)
        return self.stub.LoadAdapter(request, **self._options)

    def unload_adapter(self, name: str) -> generation_pb2.UnloadAdapterResponse:
        request = generation_pb2.UnloadAdapterRequest(name=name)
        return self.stub.UnloadAdapter(request, **self._options)

    def feedback(
        self, request_id: str, rating: int, comment: str = ""
    ) -> gateway_pb2.FeedbackResponse:
        request = gateway_pb2.FeedbackRequest(request_id=request_id, rating=rating, comment=comment)
        return self.stub.Feedback(request, **self._options)

    def usage(self, since: str = "", until: str = "") -> gateway_pb2.UsageResponse:
        request = gateway_pb2.UsageRequest(since=since, until=until)
        return self.stub.Usage(request, **self._options)
