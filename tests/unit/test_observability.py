"""Dashboards and alert rules as code: current, checked by promtool, naming real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ragtune.observability import dashboards

REPO = Path(__file__).resolve().parents[2]
GRAFANA, PROMETHEUS = REPO / "deploy" / "grafana", REPO / "deploy" / "prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    return path


@pytest.mark.parametrize("name", list(dashboards.DASHBOARDS))
def test_checked_in_dashboards_match_the_code(name):
    path = GRAFANA / f"ragtune-{name}.json"
    assert path.read_text() == dashboards.render(name), f"{path} is stale: run `make dashboards`"
    board = json.loads(path.read_text())
    assert board["uid"] == f"ragtune-{name}" and board["panels"]
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel.get("description"), f"panel {panel['title']!r} explains nothing"
            assert panel["datasource"]["uid"] == "${datasource}"


def test_alert_rules_pass_promtool_check_and_unit_tests():
    tool = promtool()
    check = subprocess.run(
        [tool, "check", "rules", "ragtune-rules.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [tool, "test", "rules", "ragtune-rules.test.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr


def _exported_names() -> set[str]:
    """Every metric name ragtune's code registers, as Prometheus sees it (ray_ prefix)."""
    names = set()
    for source in (REPO / "services" / "ragtune").rglob("*.py"):
        for name in re.findall(r'"(ragtune_[a-z_]+)"', source.read_text()):
            names.add(f"ray_{name}")
    return names


def test_dashboards_and_rules_only_use_metrics_the_code_exports():
    exported = _exported_names()
    used = set()
    for path in [*GRAFANA.glob("*.json"), PROMETHEUS / "ragtune-rules.yml"]:
        used |= set(re.findall(r"ray_ragtune_[a-z_]+", path.read_text()))
    suffixes = ("_bucket", "_count", "_sum")
    unknown = {
        name
        for name in used
        if name not in exported and not any(name.removesuffix(s) in exported for s in suffixes)
    }
    assert not unknown, f"queries use metrics nothing exports: {sorted(unknown)}"
    assert {"ray_ragtune_gateway_answers_total", "ray_ragtune_route_decisions_total"} <= used
