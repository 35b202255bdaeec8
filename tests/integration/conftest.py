"""Start the real platform once: Ray Serve, every application, the gRPC proxy on a free port."""

from __future__ import annotations

import copy
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass

import grpc
import pytest

from ragtune import documents
from ragtune.client import GatewayClient
from ragtune.common.auth import create_key
from ragtune.common.services import GENERATION, OPENAI, RETRIEVAL
from ragtune.common.serving import INTERNAL_TOKEN_ENV, INTERNAL_TOKEN_HEADER
from ragtune.deployment import app_entry, local_config, openai_base_url
from ragtune.local import start_local, stop_local
from tests.conftest import DEMO_CORPUS, free_port
from tests.integration.otlp import Receiver


@dataclass
class Platform:
    target: str
    metrics_url: str  # Ray's Prometheus endpoint: Ray's and ragtune's metrics
    acme_key: str  # admin of tenant acme
    globex_key: str  # plain key of tenant globex
    spans: Receiver  # the OTLP/gRPC receiver every service exports its spans to
    openai_url: str  # base URL of the OpenAI-compatible API on Serve's HTTP port (".../v1")

    def client(self, key: str | None = None) -> GatewayClient:
        return GatewayClient(self.target, self.acme_key if key is None else key, timeout_s=120)

    @staticmethod
    def internal(app: str) -> list[tuple[str, str]]:
        """Metadata of a direct call to an internal service (tests only: clients cannot)."""
        return [("application", app), (INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN)]


# The platform's internal credential for this test session: internal services refuse gRPC
# calls without it (ragtune.common.serving.check_network_caller); the tests that call one
# directly send it. Set before Ray starts: the replicas inherit the environment.
INTERNAL_TOKEN = secrets.token_urlsafe(16)
TIGHT_GATEWAY = "gateway-tight"  # the platform's second gateway: max_in_flight 1, quotas


def internal_channel(target: str) -> grpc.Channel:
    """A channel whose every call carries the internal credential (for a replica's own port)."""

    class AddToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def _with_token(self, details):
            metadata = [*(details.metadata or []), (INTERNAL_TOKEN_HEADER, INTERNAL_TOKEN)]
            return details._replace(metadata=metadata)

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(self._with_token(details), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(self._with_token(details), request)

    return grpc.intercept_channel(grpc.insecure_channel(target), AddToken())


@pytest.fixture(scope="session")
def otlp_receiver():
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def platform(devmodel, cross_encoder_dir, tmp_path_factory, otlp_receiver):
    data = tmp_path_factory.mktemp("data")
    acme, globex = (
        create_key(data / "keys.yaml", "acme", admin=True),
        create_key(data / "keys.yaml", "globex"),
    )
    port = free_port()
    config = local_config(
        data,
        grpc_port=port,
        http_port=free_port(),
        rerank_model=str(cross_encoder_dir),
        model_dir=devmodel.base_dir.parent,
        engine="vllm",  # gateway -> generation on vLLM (the local default is transformers)
        telemetry={
            "tracing": "otlp",
            "otlp_endpoint": f"127.0.0.1:{otlp_receiver.port}",
            "export_delay_ms": 200,
        },
    )
    # A second retrieval application with two replicas over a database of its own, for the
    # freshness test (read-your-writes from either replica).
    fresh = app_entry(RETRIEVAL, {"database_url": f"sqlite:///{data / 'fresh.db'}",
                                  "tail_interval_s": 0.2}, num_cpus=0.1)  # fmt: skip
    fresh.update(name="freshness", route_prefix="/freshness")
    fresh["deployments"][0]["num_replicas"] = 2
    config["applications"].append(fresh)
    # A second generation application with two replicas sharing an adapter catalog, for the
    # platform-wide adapter tests (the transformers engine: lighter to start twice; a token
    # CPU share, as the other applications hold nearly all of Ray's 2 CPUs).
    adapters2 = app_entry(GENERATION, {
        "model_path": str(devmodel.base_dir), "adapters_dir": str(devmodel.base_dir.parent / "adapters"),
        "engine": "transformers", "database_url": f"sqlite:///{data / 'adapters2.db'}",
        "sync_interval_s": 0.2, "torch_threads": 1,
    }, num_cpus=0.01)  # fmt: skip
    adapters2.update(name="adapters2", route_prefix="/adapters2")
    adapters2["deployments"][0]["num_replicas"] = 2
    config["applications"].append(adapters2)
    # The OpenAI-compatible API: a token CPU share too (JSON around gateway calls).
    openai = next(a for a in config["applications"] if a["name"] == OPENAI.name)
    openai["deployments"][0]["ray_actor_options"]["num_cpus"] = 0.01
    gateway = next(a for a in config["applications"] if a["name"] == "gateway")
    # The test cross-encoder is untrained: rerank exactly the passages retrieved, so the
    # wiring is exercised without letting random scores pull in unrelated chunks.
    gateway["args"].update(top_k=4, rerank_candidates=4)
    # A second gateway that handles one RPC at a time (max_in_flight) and allows globex three
    # requests a minute, for the overload and rate-limit tests: the same services behind it,
    # a token CPU share.
    tight = copy.deepcopy(gateway)
    tight.update(name=TIGHT_GATEWAY, route_prefix=f"/{TIGHT_GATEWAY}")
    tight["args"]["max_in_flight"] = 1
    tight["args"]["quotas"] = {"tenants": {"globex": {"requests_per_minute": 3}}}
    tight["deployments"][0]["ray_actor_options"]["num_cpus"] = 0.01
    config["applications"].append(tight)
    # Ray puts Unix sockets in its temp dir; pytest's tmp paths are too long for them.
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    metrics_port = free_port()
    # Replicas push metrics every 10 s by default; tests should not wait that long.
    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
    os.environ[INTERNAL_TOKEN_ENV] = INTERNAL_TOKEN
    # HAProxy's stats and metrics listeners default to fixed ports: free ones, so the suite
    # runs beside a `ragtune serve`.
    os.environ.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))
    os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))
    try:
        start_local(config, temp_dir=ray_tmp, metrics_port=metrics_port, timeout_s=600)
        yield Platform(
            f"localhost:{port}",
            f"http://127.0.0.1:{metrics_port}/metrics",
            acme,
            globex,
            otlp_receiver,
            openai_base_url(config, host="127.0.0.1"),
        )
    finally:
        stop_local()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def demo(platform):
    """The 24-document demo corpus ingested into acme's collection 'demo'."""
    with platform.client() as client:
        reply = client.ingest("demo", list(documents.from_path(DEMO_CORPUS)))
    return reply
