"""Shared fixtures: models the tests make themselves (nothing is downloaded)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from ragtune.local import use_process_env
from ragtune.resources import DEMO_CORPUS

# The local stack's environment (ragtune.local), before any test module imports ray.
use_process_env(local_ray=True)

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port free right now (servers started by tests bind it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(coro):
    """Run a coroutine to completion (the service classes are async)."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def devmodel(tmp_path_factory):
    """The tiny Llama dev model and its three adapters, trained once per test session."""
    from ragtune.tuning.devdata import default_dev_corpus
    from ragtune.tuning.devmodel import build_devmodel

    out = tmp_path_factory.mktemp("devmodel")
    return build_devmodel(out, default_dev_corpus(DEMO_CORPUS), seed=0, progress=False)


def make_generation_service(devmodel, **config):
    """A started generation service over the dev model (no Ray); ``config`` overrides."""
    from ragtune.generation.config import GenerationConfig
    from ragtune.generation.service import GenerationService

    # Tests load adapters from their tmp_path (under pytest's base folder, which also holds the
    # dev model) and from the fsspec memory bucket.
    config.setdefault("adapter_roots", [str(devmodel.base_dir.parents[1]), "memory://bucket/"])
    svc = GenerationService(
        GenerationConfig(
            model_path=str(devmodel.base_dir),
            adapters_dir=str(devmodel.base_dir.parent / "adapters"),
            **config,
        )
    )
    svc.warm_up()
    run(svc.start())
    return svc


@pytest.fixture(scope="session")
def generation_service(devmodel):
    """The generation service over the dev model with its adapters loaded (no Ray)."""
    return make_generation_service(devmodel)


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory) -> Path:
    """A tiny, untrained BERT cross-encoder with the MiniLM tokenizer: it exercises the
    CrossEncoder code path; its scores carry no meaning."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from ragtune.common.models import default_minilm_path

    out = tmp_path_factory.mktemp("cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(default_minilm_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
        max_position_embeddings=512,
    )
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (Debian's binaries), started once per test session."""
    from tests.postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """The same tests on both supported databases: SQLite in a file, and real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ragtune.db'}"
    return request.getfixturevalue("postgres_server").new_database()
