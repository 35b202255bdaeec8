"""Internal services called directly through Serve's gRPC proxy, and the metrics they export."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragtune.v1 import embedding_pb2, embedding_pb2_grpc, rerank_pb2, rerank_pb2_grpc

pytestmark = pytest.mark.integration


def metric_total(url: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def wait_for_metric(
    url: str, name: str, at_least: float, timeout_s: float = 60, **labels: str
) -> float:
    deadline = time.monotonic() + timeout_s
    while (value := metric_total(url, name, **labels)) < at_least and time.monotonic() < deadline:
        time.sleep(1)
    return value


def test_embedding_reports_truncation_in_the_reply_and_in_a_metric(platform):
    before = metric_total(platform.metrics_url, "ray_ragtune_embedding_truncated_tokens_total")
    with grpc.insecure_channel(platform.target) as channel:
        reply = embedding_pb2_grpc.EmbeddingStub(channel).Embed(
            embedding_pb2.EmbedRequest(texts=["short text", "word " * 300]),
            metadata=platform.internal("embedding"),
        )
    assert list(reply.truncated_tokens) == [0, 302 - 256]
    total = wait_for_metric(
        platform.metrics_url, "ray_ragtune_embedding_truncated_tokens_total", before + 46
    )
    assert total >= before + 46


def test_rerank_reports_truncated_passages_in_the_reply_and_in_a_metric(platform):
    name = "ray_ragtune_rerank_truncated_passages_total"
    before = metric_total(platform.metrics_url, name)
    with grpc.insecure_channel(platform.target) as channel:
        reply = rerank_pb2_grpc.RerankStub(channel).Rerank(
            rerank_pb2.RerankRequest(query="battery", passages=["short", "long " * 600]),
            metadata=platform.internal("rerank"),
        )
    assert reply.truncated_passages == 1
    assert next(r for r in reply.results if r.index == 1).truncated_tokens > 0
    assert wait_for_metric(platform.metrics_url, name, before + 1) >= before + 1


def test_internal_services_map_bad_input_to_status_codes(platform):
    with grpc.insecure_channel(platform.target) as channel:
        stub = embedding_pb2_grpc.EmbeddingStub(channel)
        for request, code, details in [
            (embedding_pb2.EmbedRequest(), grpc.StatusCode.INVALID_ARGUMENT, "texts:"),
            (embedding_pb2.EmbedRequest(texts=[""]), grpc.StatusCode.INVALID_ARGUMENT, "texts[0]:"),
            (
                embedding_pb2.EmbedRequest(texts=["x"] * 1000),
                grpc.StatusCode.INVALID_ARGUMENT,
                "texts:",
            ),
            (
                embedding_pb2.EmbedRequest(texts=["x"], model="e5-large"),
                grpc.StatusCode.NOT_FOUND,
                "unknown embedding model 'e5-large'",
            ),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                stub.Embed(request, metadata=platform.internal("embedding"))
            assert err.value.code() == code and err.value.details().startswith(details)


def test_gateway_exports_route_decisions_and_cost_by_path(platform):
    def samples(name: str) -> dict[tuple[str, str], float]:
        text = urllib.request.urlopen(platform.metrics_url, timeout=10).read().decode()
        found: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name:
                    key = (s.labels["path"], s.labels.get("reason", s.labels.get("stage")))
                    found[key] = found.get(key, 0.0) + s.value
        return found

    decisions = "ray_ragtune_route_decisions_total"
    before = samples(decisions).get(("TUNED", "no_collection"), 0.0)
    with platform.client(platform.globex_key) as client:
        reply = client.answer("Reply in JSON: what is a kite?", collection="")
    assert reply.route.reasons == ["format_requested", "no_collection"]
    deadline = time.monotonic() + 60
    while samples(decisions).get(("TUNED", "no_collection"), 0.0) < before + 1:
        assert time.monotonic() < deadline, "route decision counter did not move"
        time.sleep(1)
    assert samples(decisions)[("TUNED", "format_requested")] >= 1
    cost = samples("ray_ragtune_request_cost_usd_total")
    assert cost.get(("TUNED", "generate"), 0.0) > 0
