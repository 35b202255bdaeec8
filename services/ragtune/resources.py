"""Files that ship inside the package, so an installed ``ragtune`` needs no source checkout."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent / "examples"
DEMO_CORPUS = EXAMPLES / "demo-corpus"  # `make run`'s demo collection and the dev model's text
DEMO_QUESTIONS = EXAMPLES / "demo-questions.txt"
ROUTING_DIR = EXAMPLES / "routing"  # the labelled routing set (docs/routing.md)
ROUTING_PYREF_DIR = EXAMPLES / "routing-pyref"  # the second routing set: Python reference
# The third: new questions on the same corpus, written blind after the router's last change.
ROUTING_PYREF_FRESH_DIR = EXAMPLES / "routing-pyref-fresh"
