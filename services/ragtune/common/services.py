"""The table of ragtune's services: each one declared once, here.

A declaration names the Serve application and deployment, the proto service it serves (through
its generated typed client), where its config model and Serve builder are, and its default
deployment options. The Serve config (``ragtune.deployment``), the gRPC servicer registration,
the gateway's wiring and every ``app.py`` read this table; nothing else spells a service's name.
The HTTP applications (``HTTP_APPS``: the OpenAI-compatible API) are declared here too.

Config model and builder are import paths, as Serve's own ``import_path`` is: ``common`` sits
below the service packages and must not import them (the import-linter contracts in
pyproject.toml check that).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.descriptor import ServiceDescriptor

from ragtune.v1.clients import (
    EmbeddingClient,
    GatewayClient,
    GenerationClient,
    RerankClient,
    RetrievalClient,
    Transport,
)

C = TypeVar("C")


def resolve(import_path: str) -> Any:
    """``"package.module:attribute"`` -> the attribute."""
    module, _, attribute = import_path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class ServiceSpec(Generic[C]):
    name: str  # Serve application name and route prefix; gRPC callers send it as `application`
    deployment: str  # Serve deployment name inside the application
    client: type[C]  # the generated typed client: its DESCRIPTOR is the proto service served
    num_cpus: float  # per replica, by default; fractional so the local stack fits 2 cores
    # Requests a replica accepts at once. Serve's default (5) would starve the dynamic
    # batchers (a batch holds only what reached the replica) and the gateway, whose requests
    # mostly wait on the other services.
    max_ongoing: int
    # Serve writes an access-log line per request on the replica's serving loop; services
    # called once per answer stage keep it off (their RPC metrics and spans say the same).
    # What it costs: docs/serving.md.
    access_log: bool
    # Requests waiting for a replica beyond those (Serve's max_queued_requests, per caller):
    # a bounded queue, so overload is refused at once (RESOURCE_EXHAUSTED with retry-after-ms)
    # instead of queueing until every caller's deadline has passed.
    max_queued: int = 512
    # How often Serve's controller checks each replica (Serve's health_check_period_s; its
    # default is 10 s). A SIGKILLed replica is noticed only at its next check, so this bounds
    # the time before a replacement starts; a check is one cheap actor call (`check_health`
    # reads in-memory state). Measured recovery times: docs/security.md#chaos-under-load.
    health_check_period_s: float = 2.0
    handle_methods: tuple[str, ...] = field(default=())  # reachable through handles only
    # Clients may call it over the network (the gateway). The others are internal: the
    # gateway calls them through Serve handles, and a call that arrives over gRPC is refused
    # unless it carries the platform's internal credential (ragtune.common.serving).
    public: bool = False
    # Import paths of the pydantic config `build(args)` validates and of the Serve builder (the
    # config's `import_path`); by default the service folder's: ragtune.<name>.config:
    # <Deployment>Config and ragtune.<name>.app:build.
    config: str = ""
    builder: str = ""

    def __post_init__(self) -> None:
        if not self.config:
            object.__setattr__(
                self, "config", f"ragtune.{self.name}.config:{self.deployment}Config"
            )
        if not self.builder:
            object.__setattr__(self, "builder", f"ragtune.{self.name}.app:build")

    @property
    def descriptor(self) -> ServiceDescriptor:
        return self.client.DESCRIPTOR  # type: ignore[attr-defined]

    @property
    def servicer_function(self) -> str:
        """For Serve's ``grpc_options.grpc_servicer_functions``: the generated registration
        with request decoding that cannot fail (``ragtune.common.servicers``)."""
        return f"ragtune.common.servicers.add_{self.descriptor.name}Servicer_to_server"

    def config_class(self) -> Any:
        return resolve(self.config)

    def connect(self, transport: Transport) -> C:
        """The typed client of this service over ``transport``."""
        return self.client(transport)  # type: ignore[call-arg]


EMBEDDING = ServiceSpec(
    name="embedding",
    deployment="Embedding",
    client=EmbeddingClient,
    num_cpus=0.5,
    max_ongoing=128,
    access_log=False,
    handle_methods=("stats",),
)
RETRIEVAL = ServiceSpec(
    name="retrieval",
    deployment="Retrieval",
    client=RetrievalClient,
    num_cpus=0.25,
    max_ongoing=64,
    access_log=False,
    handle_methods=("stats", "snapshot"),
)
RERANK = ServiceSpec(
    name="rerank",
    deployment="Rerank",
    client=RerankClient,
    num_cpus=0.25,
    max_ongoing=64,
    access_log=False,
)
GENERATION = ServiceSpec(
    name="generation",
    deployment="Generation",
    client=GenerationClient,
    num_cpus=0.5,
    max_ongoing=32,
    access_log=True,
)
GATEWAY = ServiceSpec(
    name="gateway",
    deployment="Gateway",
    client=GatewayClient,
    num_cpus=0.25,
    max_ongoing=256,
    access_log=True,
    public=True,
)

# In the order a request flows; the gateway, the one public endpoint, last.
SERVICES: tuple[ServiceSpec[Any], ...] = (EMBEDDING, RETRIEVAL, RERANK, GENERATION, GATEWAY)


def by_name(name: str, services: tuple[ServiceSpec[Any], ...] = SERVICES) -> ServiceSpec[Any]:
    for spec in services:
        if spec.name == name:
            return spec
    raise KeyError(f"no service {name!r}; ragtune's are {[s.name for s in services]}")


@dataclass(frozen=True)
class HttpAppSpec:
    """An application that answers HTTP on Serve's HTTP port instead of serving a proto
    service: no servicer function, no typed client; Serve routes to it by ``route_prefix``.
    The Serve config and the chart deploy it beside the services, with the same options."""

    name: str  # Serve application name
    deployment: str  # Serve deployment name inside the application
    route_prefix: str  # its paths on the HTTP port start with this
    num_cpus: float
    max_ongoing: int
    access_log: bool
    config: str  # import path of the pydantic config `build(args)` validates
    builder: str  # import path of the Serve builder

    def config_class(self) -> Any:
        return resolve(self.config)


# The OpenAI-compatible HTTP API (/v1/chat/completions, /v1/models) over the gateway, for
# OpenAI clients and benchmark tools (docs/openai-api.md). Its work per request is JSON in and
# out around a gateway call: a small CPU share, and as many requests at once as the gateway.
OPENAI = HttpAppSpec(
    name="openai",
    deployment="OpenAI",
    route_prefix="/v1",
    num_cpus=0.1,
    max_ongoing=256,
    access_log=True,
    config="ragtune.openai_compat.config:OpenAIConfig",
    builder="ragtune.openai_compat.app:build",
)

HTTP_APPS: tuple[HttpAppSpec, ...] = (OPENAI,)


def app_by_name(name: str) -> ServiceSpec[Any] | HttpAppSpec:
    """The declaration of any application of the Serve config, service or HTTP app."""
    for spec in HTTP_APPS:
        if spec.name == name:
            return spec
    return by_name(name)
