"""The two ingresses: HAProxy (the default, which the session's platform runs) and Serve's
Python gRPC proxy (`ragtune serve --ingress proxy`, started here in a second, one-application
Ray in a subprocess, as an operator would, and stopped with SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil
import pytest
import yaml

from ragtune.common.services import EMBEDDING
from ragtune.common.serving import INTERNAL_TOKEN_ENV, INTERNAL_TOKEN_HEADER
from ragtune.deployment import app_entry, serve_config
from ragtune.v1 import embedding_pb2, embedding_pb2_grpc
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def wait_for_line(process: subprocess.Popen, start: str, timeout_s: float = 240) -> list[str]:
    """The process's output up to the first line beginning with ``start``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if line.startswith(start):
            return lines
    raise AssertionError(f"no line {start!r} from ragtune serve:\n{''.join(lines)}")


def test_the_python_proxy_ingress_serves_rpcs_and_maps_errors(tmp_path):
    port = free_port()
    config = serve_config(
        [app_entry(EMBEDDING, {}, num_cpus=0.25)], grpc_port=port, http_port=free_port()
    )
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    ray_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    ray_env[INTERNAL_TOKEN_ENV] = "ingress-test-token"  # embedding is internal: a credential
    process = subprocess.Popen(
        [sys.executable, "-m", "ragtune.cli", "--data-dir", str(tmp_path), "serve",
         "--config", str(tmp_path / "serve.yaml"), "--ingress", "proxy",
         "--metrics-port", str(free_port())],
        env=ray_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        started = wait_for_line(process, "serving gRPC on")
        assert "(proxy ingress)" in started[-1]
        # Serve's own proxy answers on the port: no HAProxy under this Ray.
        tree = psutil.Process(process.pid).children(recursive=True)
        assert not [p for p in tree if "haproxy" in p.name()]
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            stub = embedding_pb2_grpc.EmbeddingStub(channel)
            metadata = [("application", "embedding"), (INTERNAL_TOKEN_HEADER, "ingress-test-token")]
            with pytest.raises(grpc.RpcError) as refused:  # without it: refused
                stub.Embed(embedding_pb2.EmbedRequest(texts=["hello"]),
                           metadata=metadata[:1], timeout=30)  # fmt: skip
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            reply = stub.Embed(embedding_pb2.EmbedRequest(texts=["hello"]), metadata=metadata)
            assert reply.dims == 384 and len(reply.vectors[0].values) == 384
            with pytest.raises(grpc.RpcError) as bad:
                stub.Embed(embedding_pb2.EmbedRequest(texts=[]), metadata=metadata, timeout=30)
            # Bytes that are no EmbedRequest: the caller's error, decoded by ragtune's servicer
            # function in Serve's proxy, not UNKNOWN with the DecodeError in the details.
            with pytest.raises(grpc.RpcError) as corrupt:
                channel.unary_unary("/ragtune.v1.Embedding/Embed")(
                    b"\xff\xff\xff\xff", metadata=metadata, timeout=30
                )
            assert corrupt.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert corrupt.value.details() == "request: not a valid ragtune.v1.EmbedRequest message"
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad.value.details().startswith("texts")
    finally:
        process.send_signal(signal.SIGTERM)  # stops as cleanly as Ctrl-C
        out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out


def test_the_platform_is_served_by_haproxy_by_default(platform):
    # `ragtune serve`'s default ingress: Serve starts HAProxy, and it listens on the gRPC port.
    tree = psutil.Process(os.getpid()).children(recursive=True)
    haproxy = [p for p in tree if p.name() == "haproxy"]
    assert haproxy, sorted({p.name() for p in tree})
    cfg = next(a for a in haproxy[0].cmdline() if a.endswith(".cfg"))
    port = platform.target.rsplit(":", 1)[1]
    assert f":{port} proto h2" in Path(cfg).read_text()
