"""The README's Python client examples, run unchanged as scripts against the running platform
(RAGTUNE_TARGET and RAGTUNE_API_KEY set as a reader would set them), their output checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

# What each example, in README order, must print (regular expressions, one line each).
EXPECTED = [
    [
        r"^\[1\] \S+\.md  \S* -?\d+\.\d{3}$",
        r"^path: PATH_(RAG|HYBRID) - \S",
        r"^request id: \S+ cost: \d+ micro-USD$",
    ],
    [r"^\d+ tokens, \d+ micro-USD$", r"^cited: \S+\.md"],
    [
        r"^collections: (.*, )?demo(, |$)",
        r"^How long is the Atlas A2 warranty\? -> \d+ citations, \S",
        r"^Where is the Lyon office\? -> \d+ citations, \S",
    ],
    [r"^path: (RAG|HYBRID|TUNED) tokens: \d+$"],
]


def client_examples() -> list[str]:
    """The ```python blocks of the README's "Python client" section."""
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Python client\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"^```python\n(.*?)^```$", text[start:end], re.S | re.M)


def test_every_example_has_its_expected_output():
    assert len(client_examples()) == len(EXPECTED)


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_readme_example_runs_unchanged(platform, demo, tmp_path, index):
    script = tmp_path / f"example{index + 1}.py"
    script.write_text(client_examples()[index])
    env = {**os.environ, "RAGTUNE_TARGET": platform.target, "RAGTUNE_API_KEY": platform.acme_key,
           "RAGTUNE_OPENAI_URL": platform.openai_url}  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for pattern in EXPECTED[index]:
        assert re.search(pattern, result.stdout, re.M), f"{pattern!r} not in:\n{result.stdout}"
