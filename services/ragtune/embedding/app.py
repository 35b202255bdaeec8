"""Ray Serve application (its `import_path` is in ragtune.common.services: `EMBEDDING`)."""

from __future__ import annotations

from typing import Any

from ragtune.common.services import EMBEDDING
from ragtune.common.serving import build_application
from ragtune.embedding.service import EmbeddingService


def build(args: dict[str, Any]):
    return build_application(args, EMBEDDING, EmbeddingService)
