"""Per-tenant rate limits and daily token quotas refuse at the configured point, not before."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest

from ragtune.common.errors import Overloaded, outcome, to_status
from ragtune.common.serving import QUEUE_FULL_RETRY_MS, RETRY_AFTER, Admission, report_errors
from ragtune.gateway.quotas import QuotaConfig, QuotaExceeded, Quotas, TenantQuota


def quotas(tokens_in_ledger: dict[str, int] | None = None, **config) -> Quotas:
    ledger = tokens_in_ledger or {}
    return Quotas(QuotaConfig(refresh_s=0.05, **config), lambda tenant, day: ledger.get(tenant, 0))


def test_the_rate_limit_admits_exactly_its_requests_per_minute_then_refuses():
    q = quotas(default=TenantQuota(requests_per_minute=3))

    async def go():
        for _ in range(3):
            await q.admit("acme")  # the 3 allowed
        with pytest.raises(QuotaExceeded, match="3 requests per minute") as err:
            await q.admit("acme")
        assert 0 < err.value.retry_after_s <= 60
        await q.admit("globex")  # another tenant has its own window

    asyncio.run(go())


def test_a_tenant_entry_overrides_the_default():
    q = quotas(default=TenantQuota(requests_per_minute=1),
               tenants={"big": TenantQuota(requests_per_minute=5)})  # fmt: skip

    async def go():
        for _ in range(5):
            await q.admit("big")
        await q.admit("small")
        with pytest.raises(QuotaExceeded):
            await q.admit("small")

    asyncio.run(go())


def test_the_token_quota_refuses_once_used_up_counting_this_replicas_answers():
    ledger = {"acme": 90}
    q = quotas(ledger, default=TenantQuota(tokens_per_day=100))

    async def go():
        await q.admit("acme")  # 90 of 100 used: admitted
        q.spent("acme", 9)
        await q.admit("acme")  # 99: still admitted
        q.spent("acme", 5)  # 104: the answer that crossed the quota completed
        with pytest.raises(QuotaExceeded, match="used 104 of its 100 tokens") as err:
            await q.admit("acme")
        # Retry at the next midnight UTC: within a day, and exactly then.
        now = dt.datetime.now(dt.UTC)
        midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
        assert 0 < err.value.retry_after_s <= 86400
        assert err.value.retry_after_s == pytest.approx((midnight - now).total_seconds(), abs=5)

    asyncio.run(go())


def test_a_refusal_is_resource_exhausted_with_a_retry_hint_in_trailing_metadata():
    class Context:
        def set_code(self, code):
            self.code = code

        def set_details(self, details):
            self.details = details

        def set_trailing_metadata(self, metadata):
            self.trailing = metadata

    context = Context()
    with pytest.raises(QuotaExceeded), report_errors(context):
        raise QuotaExceeded("over", retry_after_s=2.5)
    assert context.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert context.trailing == [(RETRY_AFTER, "2500")]
    assert (
        to_status(QuotaExceeded("over", retry_after_s=1))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    )


def test_a_replica_admits_max_in_flight_rpcs_then_refuses_at_once_with_a_retry_hint():
    """The gateway's own bound (GatewayConfig.max_in_flight): the limit is reached, never
    exceeded, and freed by a finished RPC; the refusal is a server-side capacity error."""
    admission = Admission(2)
    with admission.admit(), admission.admit():
        refused = pytest.raises(Overloaded, match="2 requests in flight.*max_in_flight is 2")
        with refused as err, admission.admit():
            pass
        assert admission.in_flight == 2  # the refused call took no slot
    assert err.value.retry_after_s * 1000 == QUEUE_FULL_RETRY_MS
    assert to_status(err.value)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert outcome(err.value) == "server_error"  # capacity, not the caller's fault
    with pytest.raises(RuntimeError), admission.admit():
        raise RuntimeError("a failed RPC frees its slot too")
    assert admission.in_flight == 0
    with admission.admit(), admission.admit():
        assert admission.in_flight == 2
    unlimited = Admission(None)
    with unlimited.admit(), unlimited.admit(), unlimited.admit():
        assert unlimited.in_flight == 3
