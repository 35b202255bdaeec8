"""Route choice for a request. This is the walking skeleton's fixed rule; the router issue
replaces ``RuleRouter`` with a policy driven by signals, the adapter registry and live stats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ragtune.common.errors import InvalidArgument
from ragtune.common.validation import check_name
from ragtune.v1 import common_pb2, gateway_pb2


@dataclass(frozen=True)
class Route:
    path: int  # common_pb2.Path value, never PATH_AUTO
    adapter: str
    collection: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    explanation: str = ""

    @property
    def retrieves(self) -> bool:
        return self.path in (common_pb2.PATH_RAG, common_pb2.PATH_HYBRID)

    def to_pb(self) -> common_pb2.RouteDecision:
        return common_pb2.RouteDecision(
            path=self.path,
            adapter=self.adapter,
            collection=self.collection,
            reasons=list(self.reasons),
            explanation=self.explanation,
        )


class Router(Protocol):
    def decide(self, request: gateway_pb2.AnswerRequest, tenant: str) -> Route: ...


class RuleRouter:
    """AUTO: adapter and collection named → HYBRID; adapter only → TUNED; otherwise RAG."""

    def __init__(self, default_collection: str) -> None:
        self.default_collection = default_collection

    def decide(self, request: gateway_pb2.AnswerRequest, tenant: str) -> Route:
        adapter, collection = request.adapter, request.collection
        if adapter:
            check_name(adapter, "adapter")
        if collection:
            check_name(collection, "collection")
        path = request.path
        if path not in common_pb2.Path.values():
            raise InvalidArgument(f"unknown path value {path}", field="path")
        if path == common_pb2.PATH_AUTO:
            if adapter and collection:
                return Route(
                    common_pb2.PATH_HYBRID,
                    adapter,
                    collection,
                    ("adapter_and_collection_named",),
                    f"Adapter {adapter!r} gives the behaviour and collection {collection!r} the facts.",
                )
            if adapter:
                return Route(
                    common_pb2.PATH_TUNED,
                    adapter,
                    "",
                    ("adapter_named",),
                    f"Adapter {adapter!r} was named and no collection: no retrieval needed.",
                )
            collection = collection or self.default_collection
            return Route(
                common_pb2.PATH_RAG,
                "",
                collection,
                ("default_rag",),
                f"No adapter named: answer from collection {collection!r} with citations.",
            )
        name = common_pb2.Path.Name(path).removeprefix("PATH_")
        if path in (common_pb2.PATH_TUNED, common_pb2.PATH_HYBRID) and not adapter:
            raise InvalidArgument(f"{name} needs an adapter", field="adapter")
        if path == common_pb2.PATH_RAG and adapter:
            raise InvalidArgument(
                "RAG uses the base model; ask for HYBRID to combine an adapter with retrieval",
                field="adapter",
            )
        if path == common_pb2.PATH_TUNED and collection:
            raise InvalidArgument(
                "TUNED does not retrieve; ask for HYBRID to search a collection", field="collection"
            )
        if path == common_pb2.PATH_TUNED:
            return Route(path, adapter, "", ("explicit_path",), f"The request asked for {name}.")
        collection = collection or self.default_collection
        return Route(
            path, adapter, collection, ("explicit_path",), f"The request asked for {name}."
        )
