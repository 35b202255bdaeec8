"""Config of the sixth, trivial service the service-table tests add."""

from pydantic import BaseModel, Field


class EchoConfig(BaseModel):
    prefix: str = Field(default="", description="Put before every passage echoed back.")
