"""The gateway's Python client against an in-process fake Gateway (a plain grpc.server):
requests built from the arguments, metadata, deadlines, the retry policy (idempotent RPCs
only), streaming helpers and TLS, for the blocking and the asyncio client alike."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass

from ragtune.client import (
    RETRIED_RPCS,
    SERVICE_CONFIG,
    AsyncGatewayClient,
    Document,
    GatewayClient,
    answer_request,
)
from ragtune.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generation_pb2
from tests.conftest import REPO

GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
EVENTS = [
    gateway_pb2.AnswerEvent(route=common_pb2.RouteDecision(path=common_pb2.PATH_RAG)),
    gateway_pb2.AnswerEvent(delta="Lyon, "),
    gateway_pb2.AnswerEvent(delta="2019."),
    gateway_pb2.AnswerEvent(
        done=gateway_pb2.AnswerResponse(
            route=common_pb2.RouteDecision(path=common_pb2.PATH_RAG),
            citations=[common_pb2.Citation(marker=1, doc_id="lyon-office.md")],
            finish_reason="stop",
        )
    ),
]


class FakeGateway(gateway_pb2_grpc.GatewayServicer):
    """Answers every RPC with an empty reply, recording what it got; ``fail[rpc]`` calls
    of an RPC fail with UNAVAILABLE first, ``delay[rpc]`` seconds pass before it answers."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.requests: dict[str, object] = {}
        self.metadata: dict[str, dict[str, str]] = {}
        self.time_remaining: dict[str, float | None] = {}
        self.fail: Counter[str] = Counter()
        self.delay: dict[str, float] = {}
        self.endless = False  # AnswerStream sends deltas until cancelled
        self.cancelled = threading.Event()
        self.target = ""

    def _serve(self, rpc: str, request, context):
        self.calls[rpc] += 1
        self.requests[rpc] = request
        self.metadata[rpc] = dict(context.invocation_metadata())
        self.time_remaining[rpc] = context.time_remaining()
        time.sleep(self.delay.get(rpc, 0))
        if self.fail[rpc] > 0:
            self.fail[rpc] -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "replica restarting")
        return GetMessageClass(GATEWAY.methods_by_name[rpc].output_type)()

    def AnswerStream(self, request, context):
        self._serve("AnswerStream", request, context)
        if self.endless:  # until the client cancels: then gRPC stops reading this generator
            context.add_callback(self.cancelled.set)
        yield from EVENTS[:-1]
        if self.endless:
            while True:
                yield gateway_pb2.AnswerEvent(delta=".")
                time.sleep(0.01)
        yield EVENTS[-1]


def _unary(rpc: str):
    return lambda self, request, context: self._serve(rpc, request, context)


for _method in GATEWAY.methods:
    if not _method.server_streaming:
        setattr(FakeGateway, _method.name, _unary(_method.name))


@pytest.fixture
def gateway():
    fake = FakeGateway()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    gateway_pb2_grpc.add_GatewayServicer_to_server(fake, server)
    fake.target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    yield fake
    server.stop(None)


def call(kind: str, target: str, method: str, *args, client: dict | None = None, **kwargs):
    """``method`` of a GatewayClient, or of an AsyncGatewayClient run to completion."""
    client = {"api_key": "k", **(client or {})}
    if kind == "sync":
        with GatewayClient(target, **client) as c:
            return getattr(c, method)(*args, **kwargs)

    async def go():
        async with AsyncGatewayClient(target, **client) as c:
            return await getattr(c, method)(*args, **kwargs)

    return asyncio.run(go())


KINDS = pytest.mark.parametrize("kind", ["sync", "async"])


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_every_rpc_has_a_method_on_both_clients():
    for method in GATEWAY.methods:
        name = _snake(method.name)
        assert callable(getattr(GatewayClient, name)), name
        if not method.server_streaming:
            assert asyncio.iscoroutinefunction(getattr(AsyncGatewayClient, name)), name


CALLS = [
    ("answer", ("q",),
     {"path": "rag", "collection": "demo", "filter": {"team": "a"}, "sampling": {"max_tokens": 5}},
     gateway_pb2.AnswerRequest(question="q", path=common_pb2.PATH_RAG, collection="demo",
                               filter={"team": "a"}, sampling=common_pb2.SamplingParams(max_tokens=5))),
    ("ingest", ("demo", [Document(doc_id="a", text="t")]),
     {"ingest_id": "run-1", "source": "beir:x", "final": True},
     gateway_pb2.IngestRequest(collection="demo", documents=[Document(doc_id="a", text="t")],
                               create_collection=True, ingest_id="run-1", source="beir:x", final=True)),
    ("create_collection", ("c",), {"index_type": "hnsw", "metric": "l2", "lexical": True},
     gateway_pb2.GatewayCreateCollectionRequest(name="c", index_type="hnsw", metric="l2", lexical=True)),
    ("get_collection", ("c",), {}, gateway_pb2.GatewayCollectionRequest(name="c")),
    ("delete_collection", ("c",), {}, gateway_pb2.GatewayCollectionRequest(name="c")),
    ("delete_documents", ("c", ("a", "b")), {},
     gateway_pb2.DeleteDocumentsRequest(collection="c", doc_ids=["a", "b"])),
    ("list_collections", (), {}, gateway_pb2.GatewayListCollectionsRequest()),
    ("list_adapters", (), {}, generation_pb2.ListAdaptersRequest()),
    ("load_adapter", ("pirate", "/a/pirate"), {},
     generation_pb2.LoadAdapterRequest(name="pirate", source="/a/pirate")),
    ("unload_adapter", ("pirate",), {}, generation_pb2.UnloadAdapterRequest(name="pirate")),
    ("feedback", ("r-1", 4, "good"), {},
     gateway_pb2.FeedbackRequest(request_id="r-1", rating=4, comment="good")),
    ("usage", ("2026-01-01", "2026-01-31"), {},
     gateway_pb2.UsageRequest(since="2026-01-01", until="2026-01-31")),
]  # fmt: skip


@KINDS
@pytest.mark.parametrize(("method", "args", "kwargs", "request_"), CALLS, ids=[c[0] for c in CALLS])
def test_each_method_sends_the_request_its_arguments_make(
    gateway, kind, method, args, kwargs, request_
):
    reply = call(kind, gateway.target, method, *args, **kwargs)
    rpc = next(m for m in GATEWAY.methods if _snake(m.name) == method)
    assert type(reply).DESCRIPTOR is rpc.output_type
    assert gateway.requests[rpc.name] == request_
    assert gateway.metadata[rpc.name]["authorization"] == "Bearer k"
    assert gateway.metadata[rpc.name]["application"] == "gateway"


def test_the_client_needs_only_grpcio_and_protobuf():
    code = "import sys; before = set(sys.modules); import ragtune.client; print(*set(sys.modules) - before)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()} - sys.stdlib_module_names
    # grpc looks for its optional grpc_* packages; protobuf uses typing_extensions.
    others = {n for n in loaded if not n.startswith(("grpc", "_cython", "cython"))}
    assert others <= {"google", "ragtune", "typing_extensions"}


def test_paths_by_name_and_unknown_names_refused():
    assert answer_request("q", "HYBRID").path == common_pb2.PATH_HYBRID
    assert answer_request("q", common_pb2.PATH_TUNED).path == common_pb2.PATH_TUNED
    with pytest.raises(ValueError, match="path: 'fast'"):
        answer_request("q", "fast")  # type: ignore[arg-type]


def test_key_and_target_default_to_the_environment(gateway, monkeypatch):
    monkeypatch.setenv("RAGTUNE_TARGET", gateway.target)
    monkeypatch.setenv("RAGTUNE_API_KEY", "from-env")
    with GatewayClient() as client:
        client.usage()
    assert gateway.metadata["Usage"]["authorization"] == "Bearer from-env"
    with GatewayClient(api_key="") as client:  # no key at all: the gateway says UNAUTHENTICATED
        client.usage()
    assert "authorization" not in gateway.metadata["Usage"]


@KINDS
def test_deadline_per_client_and_per_call(gateway, kind):
    call(kind, gateway.target, "usage", client={"timeout_s": 30})
    assert 20 < gateway.time_remaining["Usage"] < 31
    call(kind, gateway.target, "usage", client={"timeout_s": 30}, timeout=3)
    assert 0 < gateway.time_remaining["Usage"] < 3.5  # the deadline is sent rounded up
    gateway.delay["Usage"] = 0.5
    with pytest.raises(grpc.RpcError) as err:
        call(kind, gateway.target, "usage", timeout=0.1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_the_service_config_retries_exactly_the_idempotent_rpcs_on_unavailable():
    with GatewayClient("localhost:1", "k") as client:
        options = dict(client.channel_options)
    assert options["grpc.enable_retries"] == 1
    config = json.loads(options["grpc.service_config"])
    assert config == SERVICE_CONFIG
    [method_config] = config["methodConfig"]
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    assert names == {
        ("ragtune.v1.Gateway", rpc)
        for rpc in ["ListCollections", "GetCollection", "ListAdapters", "Usage", "Ingest",
                    "DeleteDocuments", "Route"]
    }  # fmt: skip
    assert set(RETRIED_RPCS) <= {m.name for m in GATEWAY.methods}
    policy = method_config["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps attempts at 5
    assert "timeout" not in method_config  # the deadline is the caller's, per call


@KINDS
def test_an_idempotent_rpc_is_retried_transparently(gateway, kind):
    gateway.fail["ListCollections"] = 1
    call(kind, gateway.target, "list_collections")
    assert gateway.calls["ListCollections"] == 2


@KINDS
@pytest.mark.parametrize("method", ["answer", "feedback"])
def test_answer_and_feedback_are_not_retried(gateway, kind, method):
    rpc = {"answer": "Answer", "feedback": "Feedback"}[method]
    gateway.fail[rpc] = 1
    args = ("q",) if method == "answer" else ("r-1", 5)
    with pytest.raises(grpc.RpcError) as err:
        call(kind, gateway.target, method, *args)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == "replica restarting"
    assert gateway.calls[rpc] == 1


@pytest.mark.parametrize(
    "client",
    [{"service_config": None}, {"options": [("grpc.enable_retries", 0)]}],
    ids=["no service config", "the caller's channel option wins"],
)
def test_retries_can_be_turned_off(gateway, client):
    gateway.fail["ListCollections"] = 1
    with pytest.raises(grpc.RpcError):
        call("sync", gateway.target, "list_collections", client=client)
    assert gateway.calls["ListCollections"] == 1


def test_answer_stream_text_route_and_result(gateway):
    with GatewayClient(gateway.target, "k") as client:
        stream = client.answer_stream("When did the Lyon office open?", collection="demo")
        assert stream.route is None
        assert list(stream.text()) == ["Lyon, ", "2019."]
        assert stream.route.path == common_pb2.PATH_RAG
        reply = stream.result()
        # The events themselves, on a second stream; an early break leaves the rest to result().
        with client.answer_stream("q") as events:
            kinds = [e.WhichOneof("event") for e in events]
        with client.answer_stream("q") as partial:
            next(partial.text())
            assert partial.result().answer == "Lyon, 2019."
    assert reply.answer == "Lyon, 2019." and reply.citations[0].doc_id == "lyon-office.md"
    assert reply.finish_reason == "stop"
    assert kinds == ["route", "delta", "delta", "done"]
    assert gateway.requests["AnswerStream"].question == "q"


def test_async_answer_stream(gateway):
    async def go():
        async with AsyncGatewayClient(gateway.target, "k") as client:
            stream = client.answer_stream("When did the Lyon office open?", path="rag")
            texts = [text async for text in stream.text()]
            reply = await stream.result()
            async with client.answer_stream("q") as events:
                kinds = [e.WhichOneof("event") async for e in events]
            return texts, stream.route, reply, kinds

    texts, route, reply, kinds = asyncio.run(go())
    assert texts == ["Lyon, ", "2019."] and route.path == common_pb2.PATH_RAG
    assert reply.answer == "Lyon, 2019." and reply.citations[0].doc_id == "lyon-office.md"
    assert kinds == ["route", "delta", "delta", "done"]


@KINDS
def test_leaving_a_stream_cancels_the_call(gateway, kind):
    gateway.endless = True
    if kind == "sync":
        with GatewayClient(gateway.target, "k") as client, client.answer_stream("q") as stream:
            next(stream.text())
    else:

        async def go():
            async with (
                AsyncGatewayClient(gateway.target, "k") as client,
                client.answer_stream("q") as stream,
            ):
                await anext(stream.text())

        asyncio.run(go())
    assert gateway.cancelled.wait(5)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for localhost: (key PEM, certificate PEM)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    out = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(out / "key.pem"), "-out", str(out / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return (out / "key.pem").read_bytes(), (out / "cert.pem").read_bytes()


@KINDS
def test_tls_with_the_callers_root_certificate(certificate, kind):
    key, cert = certificate
    fake = FakeGateway()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    gateway_pb2_grpc.add_GatewayServicer_to_server(fake, server)
    port = server.add_secure_port("localhost:0", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    try:
        tls = grpc.ssl_channel_credentials(root_certificates=cert)
        call(kind, f"localhost:{port}", "list_collections", client={"tls": tls})
    finally:
        server.stop(None)
    assert fake.metadata["ListCollections"]["authorization"] == "Bearer k"


def test_tls_true_uses_the_system_roots():
    with GatewayClient("gateway.example.com:443", "k", tls=True) as client:
        assert isinstance(client.credentials, grpc.ChannelCredentials)
    with GatewayClient("localhost:9000", "k") as client:
        assert client.credentials is None


def test_the_type_checker_catches_a_misspelt_option_and_a_wrong_reply_type(tmp_path: Path):
    caller = tmp_path / "caller.py"
    caller.write_text(
        textwrap.dedent(
            """
            from ragtune.client import GatewayClient
            from ragtune.v1 import gateway_pb2

            def ask(client: GatewayClient) -> None:
                client.answer("q", colection="demo")
                reply: gateway_pb2.IngestResponse = client.answer("q", collection="demo")
                client.answer("q", top_k="3")
            """
        )
    )
    mypy = Path(sys.executable).parent / "mypy"
    result = subprocess.run(
        [str(mypy), "--config-file", str(REPO / "pyproject.toml"), str(caller)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert 'Unexpected keyword argument "colection"' in out
    assert 'expression has type "AnswerResponse", variable has type "IngestResponse"' in out
    assert 'Argument "top_k" to "answer" of "GatewayClient" has incompatible type "str"' in out


def test_the_client_sends_its_deadline_in_the_header_the_gateway_reads():
    from ragtune import client
    from ragtune.gateway.deadline import TIMEOUT_HEADER

    assert client.TIMEOUT_HEADER == TIMEOUT_HEADER
    options = client.GatewayClient("localhost:1", "k", timeout_s=2.5)._call_options(None)
    assert (TIMEOUT_HEADER, "2500") in options["metadata"] and options["timeout"] == 2.5
