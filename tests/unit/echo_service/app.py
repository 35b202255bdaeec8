"""Its Serve builder: the whole wiring of a new service."""

from typing import Any

from ragtune.common.serving import build_application
from tests.unit.echo_service.declaration import ECHO
from tests.unit.echo_service.service import EchoService


def build(args: dict[str, Any]):
    return build_application(args, ECHO, EchoService)
