"""What the chart ships besides its renders: the values schema against good and broken values,
the generated and copied files, the images' pins, and the database URL the chart relies on."""

from __future__ import annotations

import json
import re
import tomllib

import jsonschema
import pytest
import yaml

from ragtune.cli import chart_table_text
from tests.conftest import REPO
from tests.helm_chart import CHART, DEFAULTS, example_values, merged


def test_generated_files_are_current():
    table = CHART / "files" / "ragtune.yaml"
    assert table.read_text() == chart_table_text(), "service table drifted: make chart-files"
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("chart_readme", REPO / "helm/tools/chart_readme.py")
    readme = module_from_spec(spec)
    spec.loader.exec_module(readme)
    assert (CHART / "README.md").read_text() == readme.render(), "README drifted: make chart-files"
    text = (CHART / "values.yaml").read_text()
    documented = readme.documented_keys(text)
    undocumented = [
        leaf
        for leaf in readme.leaves(yaml.safe_load(text))
        if not any(leaf == k or leaf.startswith(k + ".") for k in documented)
    ]
    assert not undocumented, f"values without a `# --` description: {undocumented}"


def values_errors(override: dict) -> list[str]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(merged(DEFAULTS, override))
    ]


def test_values_schema_accepts_the_examples():
    for name in ("cpu", "gpu"):
        assert values_errors(example_values(name)) == []


@pytest.mark.parametrize(
    "override,message",
    [
        (
            {"services": {"gateway": {"replicas": -1}}},
            "services.gateway.replicas: -1 is less than the minimum of 0",
        ),
        (
            {"workers": {"gpu": {"maxReplicas": -2}}},
            "workers.gpu.maxReplicas: -2 is less than the minimum of 0",
        ),
        (
            {"services": {"gateway": {"replica": 2}}},
            "services.gateway: Additional properties are not allowed ('replica' was unexpected)",
        ),
        ({"gatway": {}}, ": Additional properties are not allowed ('gatway' was unexpected)"),
        ({"gateway": {"port": "9000"}}, "gateway.port: '9000' is not of type 'integer'"),
        ({"upgradeStrategy": {"type": "Rolling"}}, "upgradeStrategy.type: 'Rolling' is not one of"),
    ],
)
def test_values_schema_rejects_broken_values_clearly(override, message):
    errors = values_errors(override)
    assert len(errors) == 1 and errors[0].startswith(message), errors


def test_images_pin_the_project_s_versions():
    lock = dict(
        line.strip().split("==", 1)
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line
    )
    lock = {name.lower().replace("_", "-"): version for name, version in lock.items()}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    cpu = (REPO / "deploy/docker/Dockerfile.cpu").read_text()
    gpu = (REPO / "deploy/docker/Dockerfile.gpu").read_text()
    # Python: the CPU image's is the project's lowest; the vLLM image's (3.12) is allowed.
    assert re.search(r"^FROM python:3\.11-slim$", cpu, re.M)
    assert pyproject["project"]["requires-python"] == ">=3.11,<3.13"
    # torch: the Makefile's pin (the lock leaves torch out).
    makefile_torch = re.search(r"install --quiet torch==([\w.+]+)", (REPO / "Makefile").read_text())
    assert re.findall(r"torch==([\w.+]+)", cpu) == [makefile_torch.group(1)]
    # vLLM: the base image's tag is the `gpu` extra's pin.
    (vllm,) = [r for r in pyproject["project"]["optional-dependencies"]["gpu"] if "vllm" in r]
    assert (
        re.search(r"^FROM vllm/vllm-openai:v([\w.]+)$", gpu, re.M).group(1) == vllm.split("==")[1]
    )
    # Every other pin in the Dockerfiles is the lock's, and both install with the lock.
    for name, version in re.findall(r"([A-Za-z0-9_.\-]+)==([\w.+!]+)", cpu + gpu):
        if name.lower() in lock:
            assert lock[name.lower()] == version, name
    assert "-c requirements.lock ." in cpu and "lock_for_image.py requirements.lock" in gpu
    assert DEFAULTS["ray"]["version"] == lock["ray"]  # the chart's rayVersion
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"data", ".venv", "results"} <= set(ignored)


def test_postgres_url_without_credentials_reads_the_pg_environment(postgres_server, monkeypatch):
    """What the chart relies on: `postgresql+psycopg://` plus PG* variables from the Secret."""
    import sqlalchemy as sa

    from ragtune.gateway.ledger import Ledger
    from ragtune.retrieval.store import Store

    url = sa.make_url(postgres_server.new_database())
    for var, value in {
        "PGHOST": url.host,
        "PGPORT": str(url.port),
        "PGUSER": url.username,
        "PGDATABASE": url.database,
        "PGPASSWORD": "unused",
    }.items():
        monkeypatch.setenv(var, value)
    store, ledger = Store("postgresql+psycopg://"), Ledger("postgresql+psycopg://")
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("select current_database()")).scalar() == url.database
    store.engine.dispose()
    ledger.engine.dispose()


def test_values_files_are_in_the_chart():
    assert {p.name for p in CHART.glob("values*.yaml")} == {
        "values.yaml",
        "values-cpu.yaml",
        "values-gpu.yaml",
    }
    assert (CHART / "values.schema.json").is_file()


def test_dashboards_and_rules_are_deploy_s_byte_for_byte():
    deploy = REPO / "deploy"
    copies = {CHART / "files/grafana" / p.name: p for p in (deploy / "grafana").glob("*.json")}
    copies[CHART / "files/prometheus/ragtune-rules.yml"] = deploy / "prometheus/ragtune-rules.yml"
    assert sorted((CHART / "files/grafana").glob("*.json")) == sorted(
        p for p in copies if p.suffix == ".json"
    )
    for copy, original in copies.items():
        assert copy.read_bytes() == original.read_bytes(), f"{copy} drifted: make chart-files"
