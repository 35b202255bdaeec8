"""Debian's Prometheus scrapes the running stack: every dashboard query returns data and every
alert rule evaluates without error."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from ragtune.observability import dashboards
from ragtune.v1 import embedding_pb2, embedding_pb2_grpc, rerank_pb2, rerank_pb2_grpc
from tests.conftest import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "ragtune-rules.yml"


def api(base: str, path: str, **params) -> dict:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture
def prometheus(platform, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make test` installs Debian's prometheus package")
    # The rules as shipped, evaluated every second instead of every 30 s so the test is short.
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    target = urllib.parse.urlparse(platform.metrics_url).netloc
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            up = api(base, "query", query="up")["result"]
            if up and up[0]["value"][1] == "1":
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "prometheus did not start scraping"
        time.sleep(0.5)
    yield base
    process.terminate()
    process.wait(timeout=30)


def drive_traffic(platform) -> None:
    """Answers on every path, refused requests, an adapter reload, truncating inputs."""
    with platform.client() as client:
        for _ in range(2):
            for question in (
                "How long is the Atlas A2 warranty?",  # RAG
                "Answer in JSON: how long is the Atlas A2 warranty?",  # HYBRID
                "Talk like a pirate: what is a good name for a parrot?",  # TUNED
            ):
                client.answer(question, collection="demo")
        with pytest.raises(grpc.RpcError):
            client.answer(" ")  # a client error
        client.unload_adapter("tldr")
        client.load_adapter("tldr")
        client.answer("TL;DR: when did the Lyon office open?", collection="demo")
    with grpc.insecure_channel(platform.target) as channel:
        embedding_pb2_grpc.EmbeddingStub(channel).Embed(
            embedding_pb2.EmbedRequest(texts=["word " * 300]),
            metadata=platform.internal("embedding"),
        )
        rerank_pb2_grpc.RerankStub(channel).Rerank(
            rerank_pb2.RerankRequest(query="q", passages=["word " * 600]),
            metadata=platform.internal("rerank"),
        )


def test_every_panel_query_returns_data_and_every_rule_evaluates(platform, demo, prometheus):
    drive_traffic(platform)
    time.sleep(8)  # a few scrapes after the last request (replicas report every second)
    empty = []
    for name in dashboards.DASHBOARDS:
        board = json.loads(dashboards.render(name))
        for title, expr in dashboards.panel_queries(board):
            query = expr.replace("$__rate_interval", "5m")
            if dashboards.VLLM_PREFIX in expr:
                # vLLM sets its gauges while it has requests, and Ray drops a gauge not set
                # since its last export: look over the traffic's minutes, not at this instant.
                now = time.time()
                found = api(prometheus, "query_range", query=query, start=now - 300, end=now,
                            step=1)["result"]  # fmt: skip
                values = [float(v) for r in found for _, v in r["values"]]
            else:
                result = api(prometheus, "query", query=query)["result"]
                values = [float(r["value"][1]) for r in result]
            if not values or all(math.isnan(v) for v in values):
                empty.append(f"{name} / {title}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)

    deadline = time.monotonic() + 30
    while True:
        rules = [r for g in api(prometheus, "rules")["groups"] for r in g["rules"]]
        if all(r.get("lastEvaluation", "").startswith("20") for r in rules) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(1)
    assert len(rules) == 30
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken
    recorded = api(prometheus, "query", query="path:ragtune_answers:rate5m")["result"]
    assert {r["metric"]["path"] for r in recorded} >= {"RAG", "TUNED", "HYBRID"}
    # The latency SLO rules select the buckets at their thresholds by `le`: those must exist.
    for le in ('le="2.5"', 'le=~"5|5.0"'):
        buckets = api(
            prometheus, "query", query=f"ray_ragtune_gateway_request_seconds_bucket{{{le}}}"
        )
        assert buckets["result"], le
