"""Ray Serve application (its `import_path` is in ragtune.common.services: `RERANK`)."""

from __future__ import annotations

from typing import Any

from ragtune.common.services import RERANK
from ragtune.common.serving import build_application
from ragtune.rerank.service import RerankService


def build(args: dict[str, Any]):
    return build_application(args, RERANK, RerankService)
