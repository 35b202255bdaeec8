"""The baseline: the same backends as the local stack, in this process, with no gRPC and no Serve.

Every service object is built from the very arguments ``ragtune serve`` deploys
(``deployment.local_config``) and wired with ``LocalTransport``s, so a workload run against it
and against the platform differs only by what the platform adds: gRPC, Serve's proxies and
handles, replicas in their own processes. The report divides each stage's time by the
baseline's (docs/load-testing.md).

The data is a copy of the stack's (its SQLite databases through SQLite's online backup, safe
while the stack runs; its FAISS snapshots), so the same collections answer, and the baseline's
ledger writes never touch the platform's.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ragtune.common.clients import LocalTransport
from ragtune.common.services import EMBEDDING, GATEWAY, GENERATION, RERANK, RETRIEVAL, by_name
from ragtune.common.serving import start_service
from ragtune.deployment import local_config
from ragtune.embedding.service import EmbeddingService
from ragtune.gateway.service import GatewayService
from ragtune.generation.service import GenerationService
from ragtune.loadtest.callers import InProcessCaller
from ragtune.rerank.service import RerankService
from ragtune.retrieval.service import RetrievalService

SERVICE_CLASSES: dict[str, type] = {
    EMBEDDING.name: EmbeddingService,
    RETRIEVAL.name: RetrievalService,
    RERANK.name: RerankService,
    GENERATION.name: GenerationService,
}


def copy_data(src: Path, dst: Path) -> None:
    """The stack's databases and snapshots, consistent even while the stack writes."""
    for db in sorted(src.glob("*.db")):
        with sqlite3.connect(db) as source, sqlite3.connect(dst / db.name) as target:
            source.backup(target)
    for folder in ("snapshots",):
        if (src / folder).is_dir():
            shutil.copytree(src / folder, dst / folder)
    for name in ("keys.yaml",):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


@asynccontextmanager
async def in_process_gateway(
    data_dir: Path, *, engine: str, model_dir: Path | None = None
) -> AsyncIterator[InProcessCaller]:
    """Start every service of ``local_config(data_dir)`` in this process; yield a caller."""
    with tempfile.TemporaryDirectory(prefix="ragtune-baseline-") as tmp:
        work = Path(tmp)
        copy_data(data_dir, work)
        config = local_config(work, engine=engine, model_dir=model_dir or data_dir / "devmodel")
        services: dict[str, Any] = {}
        try:
            for app in config["applications"]:
                name = app["name"]
                if name not in SERVICE_CLASSES:
                    continue
                spec_config = by_name(name).config_class().model_validate(app["args"])
                services[name] = service = SERVICE_CLASSES[name](spec_config)
                await start_service(service)
            gateway_args = next(a for a in config["applications"] if a["name"] == GATEWAY.name)
            gateway = GatewayService(
                GATEWAY.config_class().model_validate(gateway_args["args"]),
                embedding=EMBEDDING.connect(LocalTransport(services[EMBEDDING.name])),
                retrieval=RETRIEVAL.connect(LocalTransport(services[RETRIEVAL.name])),
                generation=GENERATION.connect(LocalTransport(services[GENERATION.name])),
                rerank=RERANK.connect(LocalTransport(services[RERANK.name]))
                if RERANK.name in services
                else None,
            )
            await start_service(gateway)
            yield InProcessCaller(gateway)
        finally:
            for service in reversed(services.values()):
                shutdown = getattr(service, "shutdown", None)
                if shutdown is not None:
                    await shutdown()
