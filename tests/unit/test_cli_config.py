"""The ragtune command's help, and the Serve config it deploys (validated by Ray's schema)."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from ragtune import cli
from ragtune.deployment import load_config, local_config, openai_base_url, validate

SUBCOMMANDS = [
    "serve",
    "config",
    "devmodel",
    "tune",
    "keys",
    "ingest",
    "ask",
    "adapters",
    "collections",
    "eval",
]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: ragtune {command}" in capsys.readouterr().out


def test_config_prints_a_serve_config_that_ray_accepts(tmp_path, capsys):
    argv = ["--data-dir", str(tmp_path), "config", "--grpc-port", "9100", "--http-port", "9101"]
    assert cli.main(argv) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    schema = validate(config)
    assert schema.grpc_options.port == 9100 and schema.http_options.port == 9101
    names = [a.name for a in schema.applications]
    assert names == ["embedding", "retrieval", "rerank", "generation", "gateway", "openai"]
    rerank = next(a for a in schema.applications if a.name == "rerank")
    assert rerank.args == {}  # the offline default reranker: MaxSim over MiniLM, fused
    services, openai = schema.applications[:-1], schema.applications[-1]
    assert all(a.route_prefix == f"/{a.name}" for a in services)
    assert openai.route_prefix == "/v1"  # OpenAI clients' base URL: http://host:9101/v1
    assert openai_base_url(config) == "http://localhost:9101/v1"
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_config(path) == config


def test_reranking_can_use_a_cross_encoder_or_be_left_out(tmp_path):
    apps = {a["name"]: a for a in local_config(tmp_path, rerank=False)["applications"]}
    assert "rerank" not in apps and apps["gateway"]["args"]["rerank"] is False
    config = local_config(tmp_path, rerank_model="/models/reranker")
    apps = {a["name"]: a for a in config["applications"]}
    assert apps["rerank"]["args"]["model_path"] == "/models/reranker"
    assert apps["rerank"]["args"]["kind"] == "cross-encoder"
    assert apps["gateway"]["args"]["rerank"] is True


def test_each_builder_validates_its_args():
    from ragtune.gateway.app import build as build_gateway
    from ragtune.generation.app import build as build_generation
    from ragtune.retrieval.app import build as build_retrieval

    with pytest.raises(pydantic.ValidationError, match="model_path"):
        build_generation({})
    with pytest.raises(pydantic.ValidationError, match="keys_file"):
        build_gateway({})
    with pytest.raises(pydantic.ValidationError, match="top_k"):
        build_gateway({"keys_file": "k.yaml", "top_k": 0})
    with pytest.raises(pydantic.ValidationError, match="sqlite"):
        build_retrieval({"database_url": "mysql://x"})


def test_client_commands_report_a_missing_server_without_a_traceback(tmp_path, capsys):
    code = cli.main(
        [
            "--data-dir",
            str(tmp_path),
            "ask",
            "hello",
            "--target",
            "127.0.0.1:1",
            "--api-key",
            "k",
            "--timeout",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(("ragtune: UNAVAILABLE", "ragtune: DEADLINE_EXCEEDED"))
    assert "Traceback" not in err
