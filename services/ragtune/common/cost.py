"""What a request cost: each stage's busy time × the price of the worker it ran on, plus tokens.

Services report their busy time per request (a batch's model time split over its requests, a
continuous-batching engine's time split over the requests running), so concurrent requests
are not each charged the whole worker. Prices come from config, per worker type (a CPU core, a
GPU of some kind) and optionally per token; optional hosted-API list prices give a comparison.
Amounts are integer micro-USD, rounded per stage, so a total is always the sum of its stages
and ledger sums equal the sums of the replies.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field, model_validator

from ragtune.v1 import common_pb2

STAGES = ("embed", "retrieve", "rerank", "generate")


class WorkerPrice(BaseModel):
    kind: str = Field(default="cpu", pattern="^(cpu|gpu)$", description="cpu or gpu.")
    usd_per_hour: float = Field(ge=0, description="Price of one unit (a core or a GPU) per hour.")


class StagePrice(BaseModel):
    worker: str = Field(default="cpu", description="A key of Pricing.workers.")
    units: float = Field(
        default=1.0, gt=0, description="Units of that worker one replica of the stage holds."
    )
    usd_per_million_tokens: float = Field(
        default=0.0, ge=0, description="Added per token the stage processes (0: time only)."
    )


class ListPrices(BaseModel):
    """A hosted API's per-token list prices, to compare a self-hosted request with."""

    name: str = "hosted API"
    input_usd_per_million: float = Field(ge=0)
    output_usd_per_million: float = Field(ge=0)


def _cpu_everywhere() -> dict[str, StagePrice]:
    return {stage: StagePrice() for stage in STAGES}


class Pricing(BaseModel):
    """Defaults price a laptop-sized CPU deployment at a cloud vCPU's on-demand rate; a GPU
    deployment adds e.g. ``gpu-h100: {kind: gpu, usd_per_hour: 3.0}`` and points ``generate``
    at it."""

    workers: dict[str, WorkerPrice] = Field(
        default_factory=lambda: {"cpu": WorkerPrice(kind="cpu", usd_per_hour=0.04)}
    )
    stages: dict[str, StagePrice] = Field(default_factory=_cpu_everywhere)
    list_prices: ListPrices | None = None

    @model_validator(mode="after")
    def _known(self) -> Pricing:
        for stage, price in self.stages.items():
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
            if price.worker not in self.workers:
                raise ValueError(f"stage {stage!r} names unknown worker {price.worker!r}")
        return self


@dataclass(frozen=True)
class StageUse:
    """What one stage of one request used."""

    stage: str
    busy_ms: float
    tokens: int


def _micro(usd: float) -> int:
    return int(usd * 1e6 + 0.5)


def price(
    pricing: Pricing, uses: list[StageUse], *, prompt_tokens: int, completion_tokens: int
) -> common_pb2.Cost:
    """The Cost message of one request."""
    cost = common_pb2.Cost()
    for use in uses:
        stage = pricing.stages.get(use.stage, StagePrice())
        worker = pricing.workers.get(stage.worker)
        per_hour = worker.usd_per_hour * stage.units if worker else 0.0
        usd = use.busy_ms / 3_600_000 * per_hour + use.tokens * stage.usd_per_million_tokens / 1e6
        cost.stages.add(
            stage=use.stage,
            worker=stage.worker,
            busy_ms=use.busy_ms,
            tokens=use.tokens,
            micro_usd=_micro(usd),
        )
    cost.total_micro_usd = sum(s.micro_usd for s in cost.stages)
    if pricing.list_prices is not None:
        lp = pricing.list_prices
        cost.list_price_micro_usd = _micro(
            prompt_tokens * lp.input_usd_per_million / 1e6
            + completion_tokens * lp.output_usd_per_million / 1e6
        )
    return cost
