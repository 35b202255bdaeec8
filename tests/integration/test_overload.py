"""Overload and rate limits at the configured point, through the public port (issue 21;
docs/security.md#quotas-rate-limits-and-backpressure): a gateway replica busy with
``max_in_flight`` RPCs refuses the next one at once, a tenant over its requests per minute is
refused, both with RESOURCE_EXHAUSTED and a retry hint the client receives."""

from __future__ import annotations

import concurrent.futures
import time

import grpc
import pytest

from ragtune.common.serving import QUEUE_FULL_RETRY_MS, RETRY_AFTER
from ragtune.v1 import gateway_pb2, gateway_pb2_grpc
from tests.integration.conftest import TIGHT_GATEWAY
from tests.integration.test_services_direct import metric_total, wait_for_metric

pytestmark = pytest.mark.integration

REFUSED = "ray_ragtune_rpc_requests_total"
REFUSED_ROUTES = {"service": "gateway", "rpc": "Route", "code": "RESOURCE_EXHAUSTED"}

WORDS = [
    "enzyme",
    "lattice",
    "harbor",
    "quartz",
    "meadow",
    "signal",
    "copper",
    "orbit",
    "lantern",
    "glacier",
]


def _documents(count: int, words: int) -> list[gateway_pb2.Document]:
    """Distinct documents of ``words`` words each: enough chunks to keep embedding busy."""
    return [
        gateway_pb2.Document(
            doc_id=f"load-{i}",
            text=" ".join(f"{WORDS[(i * 7 + j) % len(WORDS)]}{j % 97}" for j in range(words)),
        )
        for i in range(count)
    ]


def test_a_busy_gateway_refuses_one_more_with_a_retry_hint(platform, demo):
    metadata = [("application", TIGHT_GATEWAY), ("authorization", f"Bearer {platform.acme_key}")]
    refused_before = metric_total(platform.metrics_url, REFUSED, **REFUSED_ROUTES)
    with grpc.insecure_channel(platform.target) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        ingest, route = stub.Ingest, stub.Route
        question = gateway_pb2.AnswerRequest(collection="demo", question="How do refunds work?")
        # Room: the one slot is free, a Route is answered.
        route(question, metadata=metadata, timeout=60)

        # A large ingest (about 1,200 chunks to embed: seconds on CPU) takes the one slot.
        big = gateway_pb2.IngestRequest(
            collection="overload", create_collection=True, documents=_documents(300, 600)
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            busy = pool.submit(ingest, big, metadata=metadata, timeout=300)
            time.sleep(1.5)
            assert not busy.done(), "the ingest ended before the gateway was probed"
            refusals = []
            for _ in range(5):
                with pytest.raises(grpc.RpcError) as refused:
                    route(question, metadata=metadata, timeout=60)
                refusals.append(refused.value)
            still_busy = not busy.done()
            ingested = busy.result()

        # Every call beyond the slot was refused at once, with the documented code and hint.
        assert still_busy, "the ingest ended while the gateway was probed"
        for err in refusals:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
            assert "max_in_flight is 1" in err.details()
            assert (RETRY_AFTER, str(QUEUE_FULL_RETRY_MS)) in tuple(err.trailing_metadata())
        # The work that held the slot completed, and the slot is free again.
        assert ingested.documents == 300 and ingested.chunks > 300
        assert route(question, metadata=metadata, timeout=60).explanation
    # Counted where SREs look: the gateways' RPC counter, by code (pushed every second).
    refused_after = wait_for_metric(
        platform.metrics_url, REFUSED, refused_before + 5, timeout_s=30, **REFUSED_ROUTES
    )
    assert refused_after - refused_before == 5


def test_a_tenant_over_its_rate_limit_is_refused_at_the_configured_point_with_a_hint(platform):
    """globex may send 3 requests a minute to the tight gateway: the 3rd is answered, the 4th
    refused with the window's reset as retry-after-ms; another tenant is not held back."""

    def metadata(key: str) -> list[tuple[str, str]]:
        return [("application", TIGHT_GATEWAY), ("authorization", f"Bearer {key}")]

    question = gateway_pb2.AnswerRequest(question="Answer like a pirate: what is an index?")
    with grpc.insecure_channel(platform.target) as channel:
        route = gateway_pb2_grpc.GatewayStub(channel).Route
        for _ in range(3):
            assert route(question, metadata=metadata(platform.globex_key), timeout=60).explanation
        with pytest.raises(grpc.RpcError) as refused:
            route(question, metadata=metadata(platform.globex_key), timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "3 requests per minute" in refused.value.details()
        hint = dict(refused.value.trailing_metadata())[RETRY_AFTER]
        assert 0 < int(hint) <= 60_000
        assert route(question, metadata=metadata(platform.acme_key), timeout=60).explanation
