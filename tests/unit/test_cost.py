"""Per-request cost: busy time × worker price, shares of shared workers, rounding, config."""

from __future__ import annotations

import pydantic
import pytest

from ragtune.common.busy import SharedClock
from ragtune.common.cost import ListPrices, Pricing, StagePrice, StageUse, WorkerPrice, price


def test_busy_time_and_tokens_are_priced_per_stage_and_totals_add_up():
    pricing = Pricing(
        workers={
            "cpu": WorkerPrice(kind="cpu", usd_per_hour=0.036),
            "gpu-h100": WorkerPrice(kind="gpu", usd_per_hour=3.6),
        },
        stages={
            "embed": StagePrice(worker="cpu", units=0.5),
            "generate": StagePrice(worker="gpu-h100", usd_per_million_tokens=2.0),
        },
        list_prices=ListPrices(input_usd_per_million=1.0, output_usd_per_million=4.0),
    )
    cost = price(
        pricing,
        [StageUse("embed", 1000.0, 12), StageUse("generate", 500.0, 250)],
        prompt_tokens=200,
        completion_tokens=50,
    )
    stages = {s.stage: s for s in cost.stages}
    # 1 s of half a CPU at $0.036/h = 5 micro-USD; 0.5 s of an H100 at $3.6/h = 500 micro-USD
    # plus 250 tokens at $2 per million = 500 micro-USD.
    assert stages["embed"].micro_usd == 5 and stages["embed"].worker == "cpu"
    assert stages["generate"].micro_usd == 1000 and stages["generate"].worker == "gpu-h100"
    assert cost.total_micro_usd == 1005
    assert cost.list_price_micro_usd == 200 + 200  # 200 in × $1/M + 50 out × $4/M


def test_pricing_config_refuses_unknown_stages_and_workers():
    with pytest.raises(pydantic.ValidationError, match="unknown worker"):
        Pricing(stages={"generate": StagePrice(worker="tpu")})
    with pytest.raises(pydantic.ValidationError, match="unknown stage"):
        Pricing(stages={"think": StagePrice()})


def test_concurrent_requests_split_the_shared_engine_time():
    now = [0.0]
    clock = SharedClock(now=lambda: now[0])
    a = clock.start()
    now[0] += 1.0  # a alone
    b = clock.start()
    now[0] += 2.0  # a and b together: 1 s each
    a_share = clock.stop(a)
    now[0] += 1.0  # b alone
    c = clock.start()  # c starts as b finishes
    b_share = clock.stop(b)
    now[0] += 5.0  # c alone
    assert (a_share, b_share, clock.stop(c)) == (2.0, 2.0, 5.0)
