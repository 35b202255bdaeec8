from ragtune.common.services import ServiceSpec
from ragtune.v1.clients import RerankClient

ECHO = ServiceSpec(
    name="echo",
    deployment="Echo",
    client=RerankClient,  # it serves the Rerank proto
    config="tests.unit.echo_service.config:EchoConfig",
    builder="tests.unit.echo_service.app:build",
    num_cpus=0.1,
    max_ongoing=8,
    access_log=False,
)
