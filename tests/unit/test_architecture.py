"""Architecture and type checks that run with the suite: the import-linter contracts of
pyproject.toml (services independent of each other, ``common`` below them, generated code
below all) and mypy over the gateway and the typed clients."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _run(tool: str, *args: str, cwd: Path = REPO, pythonpath: Path | None = None):
    env = dict(os.environ)
    if pythonpath is not None:  # ahead of the editable install's services/
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(BIN / tool), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_import_contracts_hold():
    result = _run("lint-imports")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_service_importing_another_breaks_the_contracts(tmp_path):
    shutil.copytree(REPO / "services" / "ragtune", tmp_path / "ragtune")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    service = tmp_path / "ragtune" / "rerank" / "service.py"
    service.write_text(service.read_text() + "\nfrom ragtune.embedding.config import X  # noqa\n")
    result = _run("lint-imports", cwd=tmp_path, pythonpath=tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "ragtune.rerank.service -> ragtune.embedding.config" in result.stdout


def test_mypy_passes_over_the_gateway_and_the_clients():
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_misspelt_rpc_or_a_wrong_message_fails_the_type_check(tmp_path):
    caller = tmp_path / "caller.py"
    caller.write_text(
        textwrap.dedent(
            """
            from ragtune.common.clients import LocalTransport
            from ragtune.common.services import EMBEDDING
            from ragtune.v1 import embedding_pb2, rerank_pb2


            async def call(service: object) -> None:
                embedding = EMBEDDING.connect(LocalTransport(service))
                await embedding.embedd(embedding_pb2.EmbedRequest(texts=["x"]))
                await embedding.embed(rerank_pb2.RerankRequest(query="x"))
                reply: rerank_pb2.RerankResponse = await embedding.embed(
                    embedding_pb2.EmbedRequest(texts=["x"])
                )
            """
        )
    )
    result = _run("mypy", "--config-file", str(REPO / "pyproject.toml"), str(caller))
    assert result.returncode != 0
    out = result.stdout
    assert '"EmbeddingClient" has no attribute "embedd"' in out
    assert 'incompatible type "RerankRequest"; expected "EmbedRequest"' in out
    assert 'expression has type "EmbedResponse", variable has type "RerankResponse"' in out
