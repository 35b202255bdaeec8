"""The Helm chart as the tests see it: Helm's own lint and render (helm/tools/helm_offline.py in
the helm-sdkpy environment `make helm-env` builds) and the objects it renders."""

from __future__ import annotations

import json
import subprocess
import tempfile
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

CHART = REPO / "helm" / "ragtune"
HELM_TOOL = REPO / "helm" / "tools" / "helm_offline.py"
HELM_PYTHON = REPO / ".venv-helm" / "bin" / "python"
# Optional API groups of a cluster (CRDs), for .Capabilities: what the stand-in API serves.
MONITORING = "monitoring.coreos.com/v1"
GATEWAY_API = "gateway.networking.k8s.io/v1"
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def example_values(name: str) -> dict[str, Any]:
    """values-NAME.yaml of the chart."""
    return yaml.safe_load((CHART / f"values-{name}.yaml").read_text())


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, maps merged key by key (what Helm does with -f)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def helm_batch(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run Helm jobs (lint/template, helm_offline.py's batch) in one process: each answer
    has "result" or "error"."""
    if not HELM_PYTHON.is_file():
        pytest.fail("the chart tests need helm-sdkpy's environment: run `make helm-env`")
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump([{"chart": str(CHART), **job} for job in jobs], file)
        file.flush()
        done = subprocess.run(
            [str(HELM_PYTHON), str(HELM_TOOL), "batch", file.name],
            capture_output=True,
            text=True,
            timeout=300,
        )
    if done.returncode != 0:
        pytest.fail(f"helm_offline.py failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout)


def objects(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def render(values: dict[str, Any], api_groups: list[str] = ()) -> list[dict[str, Any]]:
    """The objects `helm install -f values` sends a cluster serving ``api_groups``."""
    (answer,) = helm_batch([{"action": "template", "values": values, "api_groups": api_groups}])
    if "error" in answer:
        pytest.fail(f"helm: {answer['error']}")
    return objects(answer["result"])


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == kind]
    return found


def serve_config(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The RayService's serveConfigV2, parsed."""
    return yaml.safe_load(one(objs, "RayService")["spec"]["serveConfigV2"])
