"""One Serve multi-application config drives ragtune everywhere.

``ragtune serve`` deploys it on a local Ray (``ragtune.local``); Helm writes the same document
into the KubeRay RayService's ``serveConfigV2``. Ray's own ``ServeDeploySchema`` validates it,
and each application's ``build(args)`` validates its ``args`` with the service's pydantic
config. Application names, deployments and their defaults come from the service table
(``ragtune.common.services``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ragtune.common.services import (
    EMBEDDING,
    GATEWAY,
    GENERATION,
    HTTP_APPS,
    OPENAI,
    RERANK,
    RETRIEVAL,
    SERVICES,
    HttpAppSpec,
    ServiceSpec,
)

DEFAULT_GRPC_PORT = 9000
DEFAULT_HTTP_PORT = 8000
DEV_MODEL = "ragtune-dev-llama"
ENGINES = ("vllm", "transformers")
DEFAULT_ENGINE = "transformers"  # the faster on the dev model on CPUs: docs/generation.md
DEV_KV_CACHE_BYTES = 1 << 30
REFLECTION_SERVICER = "ragtune.common.servicers.add_ReflectionServicer_to_server"


def app_entry(
    spec: ServiceSpec[Any] | HttpAppSpec, args: dict[str, Any], *, num_cpus: float | None = None
) -> dict[str, Any]:
    """One ``applications:`` entry of a Serve config for the service or HTTP app ``spec``,
    with its default deployment options from the service table."""
    # Every service needs a route prefix, or Serve's gRPC proxy cannot reach it; an HTTP app's
    # is where its paths start on the HTTP port.
    prefix = spec.route_prefix if isinstance(spec, HttpAppSpec) else f"/{spec.name}"
    return {
        "name": spec.name,
        "route_prefix": prefix,
        "import_path": spec.builder,
        "args": args,
        "deployments": [
            {
                "name": spec.deployment,
                "num_replicas": 1,
                "max_ongoing_requests": spec.max_ongoing,
                **(
                    {
                        "max_queued_requests": spec.max_queued,
                        "health_check_period_s": spec.health_check_period_s,
                    }
                    if isinstance(spec, ServiceSpec)
                    else {}
                ),
                "ray_actor_options": {"num_cpus": spec.num_cpus if num_cpus is None else num_cpus},
                "logging_config": {"enable_access_log": spec.access_log},
            }
        ],
    }


def serve_config(
    applications: list[dict[str, Any]],
    *,
    grpc_port: int = DEFAULT_GRPC_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    services: Iterable[ServiceSpec[Any]] = SERVICES,
    reflection: bool = False,
) -> dict[str, Any]:
    """A whole Serve config: ``applications`` behind a gRPC ingress that serves every proto
    service of ``services`` (Serve needs their servicer functions to decode requests), and the
    standard health service with the gateway's. ``reflection`` adds server reflection of the
    public services (Serve's own, which would list every registered service, stays off)."""
    servicers = [spec.servicer_function for spec in services]
    if reflection:
        servicers.append(REFLECTION_SERVICER)
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "grpc_options": {
            "port": grpc_port,
            "grpc_servicer_functions": servicers,
            "enable_reflection": False,
        },
        "applications": applications,
    }


def dev_generation_args(model_dir: Path, engine: str = DEFAULT_ENGINE) -> dict[str, Any]:
    """The generation application's args for the dev model in ``model_dir`` on ``engine``."""
    args: dict[str, Any] = {
        "model_path": str(model_dir / DEV_MODEL),
        "adapters_dir": str(model_dir / "adapters"),
        "engine": engine,
    }
    if engine == "vllm":
        # A fixed KV cache: vLLM's CPU build otherwise reserves a share of the machine's
        # memory (its gpu_memory_utilization), far more than the dev model needs.
        args["engine_kwargs"] = {"kv_cache_memory_bytes": DEV_KV_CACHE_BYTES}
    return args


def local_config(
    data_dir: Path,
    *,
    grpc_port: int = DEFAULT_GRPC_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    rerank_model: str | None = None,
    rerank: bool = True,
    model_dir: Path | None = None,
    telemetry: dict[str, Any] | None = None,
    engine: str = DEFAULT_ENGINE,
    reflection: bool = False,
) -> dict[str, Any]:
    """The default CPU deployment: MiniLM embedder, FAISS CPU over SQLite, the dev model on
    ``engine`` (transformers + PEFT by default, the faster on the dev model on CPUs; vLLM's
    CPU build with ``engine="vllm"``: docs/generation.md).

    Reranking is on: MaxSim over the shipped MiniLM fused with the first-stage order (the
    rerank config's defaults; what it gains: docs/retrieval.md), or the cross-encoder in
    ``rerank_model``. ``rerank=False`` leaves the rerank application out.
    ``model_dir`` holds ``ragtune-dev-llama/`` and ``adapters/`` (default: DATA_DIR/devmodel).
    ``telemetry`` (a ``TelemetryConfig`` as a dict) goes to every application.
    The OpenAI-compatible API (docs/openai-api.md) answers on ``http_port`` under ``/v1``.
    """
    data_dir = data_dir.resolve()
    model_dir = (model_dir or data_dir / "devmodel").resolve()
    rerank_args: dict[str, Any] = {}  # the offline default: MaxSim over MiniLM, fused
    if rerank_model is not None:
        rerank_args = {
            "kind": "cross-encoder",
            "model_path": rerank_model,
            "input_order_weight": 0.0,
        }
    args: dict[ServiceSpec[Any], dict[str, Any]] = {
        EMBEDDING: {},
        RETRIEVAL: {
            "database_url": f"sqlite:///{data_dir / 'ragtune.db'}",
            "snapshot_dir": str(data_dir / "snapshots"),
        },
        RERANK: rerank_args,
        GENERATION: {
            **dev_generation_args(model_dir, engine),
            "database_url": f"sqlite:///{data_dir / 'ragtune.db'}",  # the adapter catalog
        },
        GATEWAY: {
            "keys_file": str(data_dir / "keys.yaml"),
            "rerank": rerank,
            "database_url": f"sqlite:///{data_dir / 'ledger.db'}",
        },
    }
    apps = [app_entry(spec, args[spec]) for spec in SERVICES if rerank or spec is not RERANK]
    apps.append(app_entry(OPENAI, {}))  # the OpenAI-compatible API on the HTTP port
    if telemetry:
        for app in apps:
            app["args"]["telemetry"] = dict(telemetry)
    return serve_config(apps, grpc_port=grpc_port, http_port=http_port, reflection=reflection)


def openai_base_url(config: dict[str, Any], host: str = "localhost") -> str | None:
    """Where ``config`` serves the OpenAI-compatible API (an OpenAI client's ``base_url``), or
    None when it deploys no such application."""
    for app in config.get("applications", []):
        if app.get("import_path") == OPENAI.builder:
            port = config.get("http_options", {}).get("port", DEFAULT_HTTP_PORT)
            return f"http://{host}:{port}{app['route_prefix']}"
    return None


def chart_table() -> dict[str, Any]:
    """The service table as the Helm chart reads it (``ragtune config --chart`` writes it to
    helm/ragtune/files/): the Serve config of every service with its default deployment
    options and empty args, which the chart's templates fill from its values, and each
    service's gRPC servicer function, so the chart can register the public one alone (the
    gateway, whose proto service routes and ingresses match). The HTTP apps (the
    OpenAI-compatible API) follow the services in ``applications``."""
    applications: list[ServiceSpec[Any] | HttpAppSpec] = [*SERVICES, *HTTP_APPS]
    return {
        "serveConfig": serve_config([app_entry(spec, {}) for spec in applications]),
        "servicers": {spec.name: spec.servicer_function for spec in SERVICES},
        "public": GATEWAY.name,
        "publicService": GATEWAY.descriptor.full_name,
    }


def load_config(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    validate(config)
    return config


def validate(config: dict[str, Any]):
    """Validate with Ray's own schema; returns the parsed ``ServeDeploySchema``."""
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(config)
