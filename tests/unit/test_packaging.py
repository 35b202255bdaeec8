"""The installed package works outside a source checkout: what it ships (demo corpus, routing
set, typed clients) is package data, and no path climbs out of the package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_the_wheel_runs_outside_the_checkout(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         str(REPO), "-w", str(tmp_path / "dist")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("ragtune-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install

    def python(code: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=elsewhere, env=env, text=True,
            capture_output=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    out = python(
        "import ragtune, ragtune.resources as r, ragtune.v1.clients\n"
        "print(ragtune.__file__)\n"
        "print(len(list(r.DEMO_CORPUS.glob('*.md'))), r.DEMO_QUESTIONS.is_file(),"
        " (r.ROUTING_DIR / 'requests.jsonl').is_file())"
    )
    location, found = out.splitlines()
    assert location.startswith(str(site))
    assert found.split()[1:] == ["True", "True"] and int(found.split()[0]) >= 10
    config = python("from ragtune.cli import main; main(['--data-dir', 'd', 'config'])")
    assert "import_path: ragtune.gateway.app:build" in config
