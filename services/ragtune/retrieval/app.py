"""Ray Serve application (its `import_path` is in ragtune.common.services: `RETRIEVAL`)."""

from __future__ import annotations

from typing import Any

from ragtune.common.services import RETRIEVAL
from ragtune.common.serving import build_application
from ragtune.retrieval.service import RetrievalService


def build(args: dict[str, Any]):
    return build_application(args, RETRIEVAL, RetrievalService)
