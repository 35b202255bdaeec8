"""The public port under hostile input (issue 21): random and corrupted bytes sent as the body of
every Gateway RPC are INVALID_ARGUMENT (or UNAUTHENTICATED, for bytes that happen to decode,
sent without a key), never UNKNOWN with a Python class in the details; the gateway answers
normally afterwards. Also the standard health service on the same port, and no reflection
unless asked for."""

from __future__ import annotations

import random
import time
import urllib.request
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from ragtune.v1 import common_pb2, gateway_pb2

pytestmark = pytest.mark.integration

PER_RPC = 200
GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
METADATA = [("application", "gateway")]
ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED}


def bodies(rng: random.Random, n: int) -> list[bytes]:
    """Random bytes of every small length, and valid requests with bytes flipped or cut."""
    valid = gateway_pb2.AnswerRequest(question="When did the Lyon office open?", collection="demo",
                                      top_k=3, filter={"team": "it"}).SerializeToString()  # fmt: skip
    out = []
    for i in range(n):
        if i % 2:
            out.append(rng.randbytes(rng.randrange(1, 256)))
        else:
            body = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            out.append(bytes(body[: rng.randrange(1, len(body) + 1)]))
    return out


def call(channel: grpc.Channel, method, body: bytes) -> grpc.StatusCode:
    path = f"/{GATEWAY.full_name}/{method.name}"
    try:
        if method.server_streaming:
            for _ in channel.unary_stream(path)(body, metadata=METADATA, timeout=60):
                pass
        else:
            channel.unary_unary(path)(body, metadata=METADATA, timeout=60)
    except grpc.RpcError as err:
        assert "Unexpected <class" not in (err.details() or ""), err.details()
        assert len(err.details() or "") <= 512
        return err.code()
    return grpc.StatusCode.OK


def test_random_bytes_to_every_rpc_are_invalid_argument_and_the_gateway_lives(platform):
    rng = random.Random(21)
    seen: dict[str, Counter] = {}
    with grpc.insecure_channel(platform.target) as channel:
        for method in GATEWAY.methods:
            seen[method.name] = Counter(call(channel, method, b) for b in bodies(rng, PER_RPC))
    unexpected = {name: codes for name, codes in seen.items() if set(codes) - ALLOWED}
    assert not unexpected, unexpected
    # Corrupt bytes were really sent and refused as such.
    assert sum(codes[grpc.StatusCode.INVALID_ARGUMENT] for codes in seen.values()) > PER_RPC
    with platform.client() as client:
        assert client.list_collections() is not None


def test_the_standard_health_service_answers_on_the_gateways_port(platform):
    with grpc.insecure_channel(platform.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ragtune.v1.Gateway"):
            reply = health.Check(
                health_pb2.HealthCheckRequest(service=service), metadata=METADATA, timeout=30
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="ragtune.v1.Retrieval"),
                         metadata=METADATA, timeout=30)  # fmt: skip
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_is_off_by_default(platform):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(platform.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as off:
            list(stub.ServerReflectionInfo(iter([request]), metadata=METADATA, timeout=30))
        assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _gateway_rpcs(metrics_url: str) -> Counter:
    """ray_ragtune_rpc_requests_total of the gateway, summed by outcome."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    totals: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ray_ragtune_rpc_requests_total" and s.labels.get("service") == "gateway":
                totals[s.labels.get("outcome", "")] += s.value
    return totals


def test_abandoned_calls_count_as_cancelled_not_as_server_errors(platform):
    """Issue 21: a burst of calls the client abandoned (its 0.3 s deadline) was counted as
    INTERNAL by the gateway; they are cancelled now, and not server errors."""
    before = _gateway_rpcs(platform.metrics_url)
    request = gateway_pb2.AnswerRequest(question="Tell me about the Lyon office, at length.",
                                        path=common_pb2.PATH_TUNED, adapter="pirate")  # fmt: skip
    metadata = [*METADATA, ("authorization", f"Bearer {platform.acme_key}")]
    body, ended = request.SerializeToString(), Counter()
    with grpc.insecure_channel(platform.target) as channel:
        streams = [
            channel.unary_stream(f"/{GATEWAY.full_name}/AnswerStream")(
                body, metadata=metadata, timeout=0.3
            )
            for _ in range(20)
        ]
        unary = [
            channel.unary_unary(f"/{GATEWAY.full_name}/Answer").future(
                body, metadata=metadata, timeout=0.3
            )
            for _ in range(20)
        ]
        for stream in streams:
            try:
                list(stream)
                ended["OK"] += 1
            except grpc.RpcError as err:
                ended[err.code().name] += 1
        for future in unary:
            try:
                future.result()
                ended["OK"] += 1
            except grpc.RpcError as err:
                ended[err.code().name] += 1
    assert ended["DEADLINE_EXCEEDED"] > 0, ended
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # replicas push their metrics every second here
        after = _gateway_rpcs(platform.metrics_url)
        if after["cancelled"] > before["cancelled"]:
            break
        time.sleep(1)
    assert after["cancelled"] > before["cancelled"], (before, after)
    assert after["server_error"] == before["server_error"], (before, after)
