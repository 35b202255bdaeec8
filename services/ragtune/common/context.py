"""Per-call information handed to service methods, independent of how they are served."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CallContext:
    """What a service method may know about its caller.

    Built from the gRPC metadata when a request comes through Serve's gRPC proxy, from the
    metadata a handle caller passes on (``_metadata``: the OpenAI-compatible HTTP ingress) when
    it comes through a Serve handle; tests build it directly.
    """

    metadata: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""

    @classmethod
    def from_grpc(cls, grpc_context: Any | None) -> CallContext:
        if grpc_context is None:
            return cls()
        metadata = {k.lower(): v for k, v in grpc_context.invocation_metadata()}
        return cls(metadata=metadata, request_id=grpc_context.request_id() or "")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> CallContext:
        """From metadata a handle caller passed on (keys lower-cased, as gRPC's are)."""
        return cls(metadata={k.lower(): v for k, v in metadata.items()})

    def get(self, key: str, default: str = "") -> str:
        return self.metadata.get(key.lower(), default)
