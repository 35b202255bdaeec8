"""What the chart ships runs: the serveConfigV2 Helm renders for values-cpu.yaml, deployed with
`ragtune serve --config` on a Ray of its own (a subprocess, as an operator would run it),
answers through the gateway. The nearest this machine comes to a cluster: no KubeRay, no
pods, no images; the Serve config itself is the chart's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import pytest
import yaml

from ragtune.client import GatewayClient
from ragtune.common.auth import create_key
from ragtune.v1 import embedding_pb2, embedding_pb2_grpc
from tests.conftest import free_port
from tests.helm_chart import example_values, render, serve_config
from tests.integration.test_ingress import wait_for_line

pytestmark = pytest.mark.integration


def test_the_cpu_chart_s_serve_config_deploys_and_answers(devmodel, tmp_path):
    config = serve_config(render(example_values("cpu")))
    apps = {app["name"]: app for app in config["applications"]}
    # The rendered config names the cluster's paths (the devmodel init container's volume, the
    # data volume, the keys Secret's mount) and the pods' ports. For this local run, and only
    # here, those are pointed at this machine: the dev model the tests build, SQLite files and
    # a keys file in tmp_path, free ports. Everything else is deployed as rendered.
    rendered_paths = (
        apps["generation"]["args"]["model_path"],
        apps["gateway"]["args"]["keys_file"],
    )
    assert rendered_paths == ("/models/ragtune-dev-llama", "/etc/ragtune/keys/keys.yaml")
    apps["generation"]["args"].update(
        model_path=str(devmodel.base_dir), adapters_dir=str(devmodel.base_dir.parent / "adapters")
    )
    apps["retrieval"]["args"]["database_url"] = f"sqlite:///{tmp_path / 'ragtune.db'}"
    apps["gateway"]["args"].update(
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}", keys_file=str(tmp_path / "keys.yaml")
    )
    grpc_port, http_port = free_port(), free_port()
    config["grpc_options"]["port"], config["http_options"]["port"] = grpc_port, http_port
    key = create_key(tmp_path / "keys.yaml", "acme", admin=True)
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    # A Ray of its own: none of the session platform's Serve settings, HAProxy on free ports.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    env.update(
        RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()),
        RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ragtune.cli",
            "--data-dir",
            str(tmp_path),
            "serve",
            "--config",
            str(tmp_path / "serve.yaml"),
            "--metrics-port",
            str(free_port()),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_line(process, "serving gRPC on", timeout_s=420)
        with GatewayClient(f"localhost:{grpc_port}", key, timeout_s=120) as client:
            # HAProxy learns the applications' replicas a moment after Serve reports them
            # running (longer on a busy machine): NOT_FOUND until then.
            deadline = time.monotonic() + 120
            while True:
                try:
                    reply = client.answer("Name a parrot.", path="tuned", adapter="pirate")
                    break
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                        raise
                    time.sleep(1)
        assert reply.answer.strip() and reply.route.adapter == "pirate"
        # The chart registers only the gateway's API on the port: an internal service cannot
        # be called from outside even when named in the metadata.
        with (
            grpc.insecure_channel(f"localhost:{grpc_port}") as channel,
            pytest.raises(grpc.RpcError) as refused,
        ):
            embedding_pb2_grpc.EmbeddingStub(channel).Embed(
                embedding_pb2.EmbedRequest(texts=["hello"]),
                metadata=[("application", "embedding")],
                timeout=30,
            )
        # Refused either way: the ingress knows no such method (UNIMPLEMENTED), routes no
        # such application (NOT_FOUND), or the service itself refuses a call without the
        # internal credential (PERMISSION_DENIED), depending on the ingress mode.
        refusals = (
            grpc.StatusCode.UNIMPLEMENTED,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert refused.value.code() in refusals, refused.value
        # KubeRay's readiness probes ask Serve's HTTP proxy this on every pod.
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/-/healthz", timeout=30) as r:
            assert r.status == 200
        # The chart deploys the OpenAI-compatible API on the same HTTP port, under /v1.
        assert "openai" in apps and apps["openai"]["route_prefix"] == "/v1"
        models = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/models", headers={"Authorization": f"Bearer {key}"}
        )
        deadline = time.monotonic() + 120
        while True:  # HAProxy learns the HTTP route a moment after Serve reports it running
            try:
                with urllib.request.urlopen(models, timeout=30) as r:
                    listed = [m["id"] for m in json.load(r)["data"]]
                break
            except urllib.error.HTTPError as err:
                if err.code != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(1)
        assert listed[0] == "ragtune-dev-llama" and "pirate" in listed
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out[-5000:]
