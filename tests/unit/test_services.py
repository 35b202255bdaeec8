"""The service table: every service declared once, read by the Serve config, the gRPC
ingress and the clients; a new service is one declaration plus its folder."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel

from ragtune.common.clients import LocalTransport
from ragtune.common.services import HTTP_APPS, SERVICES, app_by_name, by_name, resolve
from ragtune.deployment import app_entry, local_config, serve_config, validate
from ragtune.v1 import rerank_pb2
from tests.conftest import REPO, run
from tests.unit.echo_service.declaration import ECHO
from tests.unit.echo_service.service import EchoService

PACKAGE = REPO / "services" / "ragtune"


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_each_declaration_resolves_to_real_parts(spec):
    assert issubclass(spec.config_class(), BaseModel)
    assert callable(resolve(spec.builder))
    assert callable(resolve(spec.servicer_function.replace(".add_", ":add_", 1)))
    assert spec.descriptor.methods, "a service serves at least one RPC"


def test_the_local_config_is_the_table():
    config = local_config(Path("/tmp/ragtune-x"))
    validate(config)
    apps = {a["name"]: a for a in config["applications"]}
    assert list(apps) == [s.name for s in (*SERVICES, *HTTP_APPS)]
    for spec in (*SERVICES, *HTTP_APPS):
        deployment = apps[spec.name]["deployments"][0]
        assert apps[spec.name]["import_path"] == spec.builder
        assert deployment["name"] == spec.deployment
        assert deployment["max_ongoing_requests"] == spec.max_ongoing
        assert deployment["logging_config"]["enable_access_log"] == spec.access_log
    assert config["grpc_options"]["grpc_servicer_functions"] == [
        s.servicer_function for s in SERVICES
    ]
    with pytest.raises(KeyError, match="no service 'nope'"):
        by_name("nope")


@pytest.mark.parametrize("spec", HTTP_APPS, ids=lambda s: s.name)
def test_each_http_app_resolves_and_answers_under_its_prefix(spec):
    assert issubclass(spec.config_class(), BaseModel)
    assert type(resolve(spec.builder)({})).__name__ == "Application"
    assert app_by_name(spec.name) is spec and app_by_name("gateway") is by_name("gateway")
    app = {a["name"]: a for a in local_config(Path("/tmp/ragtune-x"))["applications"]}[spec.name]
    assert app["route_prefix"] == spec.route_prefix


def test_a_sixth_service_is_one_declaration_plus_its_folder():
    config = serve_config(
        [*local_config(Path("/tmp/ragtune-x"))["applications"], app_entry(ECHO, {"prefix": ">"})],
        services=(*SERVICES, ECHO),
    )
    validate(config)  # Ray's own ServeDeploySchema
    assert config["applications"][-1]["import_path"] == "tests.unit.echo_service.app:build"
    app = resolve(ECHO.builder)({"prefix": ">"})  # validates args, binds the deployment
    assert type(app).__name__ == "Application"
    with pytest.raises(ValueError, match="prefix"):
        resolve(ECHO.builder)({"prefix": 3})
    client = ECHO.connect(LocalTransport(EchoService(ECHO.config_class()())))
    reply = run(client.rerank(rerank_pb2.RerankRequest(query="q", passages=["a", "b", "c"])))
    assert [r.index for r in reply.results] == [0, 1, 2]


def test_a_transport_that_cannot_serve_every_rpc_is_refused_at_construction():
    class Half:
        async def ListAdapters(self, request): ...

    with pytest.raises(TypeError, match="no method Generate, GenerateStream"):
        by_name("generation").connect(LocalTransport(Half()))


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_no_rpc_or_deployment_name_is_spelt_outside_the_table():
    """RPC and deployment names as string literals would bypass the typed clients (a typo
    fails only at run time); generated code and the table itself are the exceptions."""
    names = {spec.deployment for spec in SERVICES} | {
        m.name for spec in SERVICES for m in spec.descriptor.methods
    }
    allowed = {PACKAGE / "common" / "services.py"}
    found = {}
    sources = [*PACKAGE.rglob("*.py"), *(REPO / "load_tests").rglob("*.py")]
    for path in sources:
        if "v1" in path.relative_to(REPO).parts or path in allowed:
            continue
        if hits := _string_literals(path) & names:
            found[str(path.relative_to(REPO))] = sorted(hits)
    assert not found, f"service or RPC names spelt as strings: {found}"


def test_an_idempotent_handle_call_is_retried_once_when_its_replica_died(monkeypatch):
    import asyncio

    from ragtune.common import clients

    class ActorDiedError(Exception):
        pass

    calls: list[str] = []

    class Method:
        def __init__(self, rpc: str, fail: int) -> None:
            self.rpc, self.fail = rpc, fail

        async def remote(self, request, **extras):
            calls.append(self.rpc)
            if calls.count(self.rpc) <= self.fail:
                raise ActorDiedError("replica died")
            return "ok"

    from ragtune.common.services import GENERATION, RETRIEVAL

    transport = clients.HandleTransport("app", "Dep")
    # Search and Embed are marked idempotent in their protos, Generate is not.
    transport.idempotent = clients.idempotent_rpcs(RETRIEVAL.descriptor) | {"Embed"}
    assert "Generate" not in clients.idempotent_rpcs(GENERATION.descriptor)
    monkeypatch.setattr(clients, "RETRY_PAUSE_S", (0.0, 0.0))
    fails = dict(zip(("Search", "Generate", "Embed"), (1, 1, 2), strict=True))
    monkeypatch.setattr(transport, "_method", lambda rpc, **o: Method(rpc, fails[rpc]))

    assert asyncio.run(transport.unary("Search", None, object)) == "ok"  # retried once
    with pytest.raises(ActorDiedError):  # never retried: a repeat costs a generation
        asyncio.run(transport.unary("Generate", None, object))
    with pytest.raises(ActorDiedError):  # only once
        asyncio.run(transport.unary("Embed", None, object))
    assert calls == ["Search", "Search", "Generate", "Embed", "Embed"]
