"""Ray Serve application (its `import_path` is in ragtune.common.services: `OPENAI`).

A FastAPI ingress on Serve's HTTP port; it calls the gateway through a Serve deployment handle,
passing the caller's headers on as the gateway's metadata (``HandleTransport.for_caller``).
"""

from __future__ import annotations

from typing import Any

from ragtune.common.clients import HandleTransport
from ragtune.common.services import GATEWAY, OPENAI
from ragtune.common.telemetry import setup_tracing
from ragtune.openai_compat.config import OpenAIConfig
from ragtune.openai_compat.routes import make_app
from ragtune.openai_compat.service import OpenAIService


class OpenAIIngress:
    """The deployment: the service and its FastAPI app, made on the replica (the app is built
    there by ``__serve_build_asgi_app__``, so nothing of it is pickled or module-global)."""

    def __init__(self, config: OpenAIConfig) -> None:
        setup_tracing(config.telemetry, OPENAI.name)
        gateway = HandleTransport(GATEWAY.name, GATEWAY.deployment)
        self.service = OpenAIService(
            config, lambda metadata: GATEWAY.connect(gateway.for_caller(metadata))
        )

    def __serve_build_asgi_app__(self) -> Any:
        return make_app(self.service)


def build(args: dict[str, Any] | None):
    from ray import serve

    config = OpenAIConfig.model_validate(args or {})
    ingress = serve.ingress()(OpenAIIngress)  # late-bound: the app comes from the replica
    return serve.deployment(name=OPENAI.deployment)(ingress).bind(config)
