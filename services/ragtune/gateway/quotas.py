"""Per-tenant request-rate limits and daily token quotas, enforced at the gateway before any
work starts (docs/security.md "Quotas").

- **Rate**: requests per minute per tenant, over a moving window, by the ``limits`` library
  (the rate limiter behind Flask-Limiter and SlowAPI; its windows are exact, and its storage is
  a URL: ``memory://`` keeps counts per gateway replica, ``redis://host`` shares them across
  replicas). A request over the limit is refused with RESOURCE_EXHAUSTED and a retry hint.
- **Tokens**: prompt + completion tokens per tenant per UTC day, from the usage ledger (every
  replica writes it, so every replica sees the same total, refreshed every ``refresh_s``), plus
  what this replica answered since. A tenant is refused once its total reaches the quota: the
  request that crosses it completes (its size is not known before it runs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from pydantic import BaseModel, Field

from ragtune.common.errors import RetryLater


class TenantQuota(BaseModel):
    requests_per_minute: int = Field(default=0, ge=0, description="0: no limit")
    tokens_per_day: int = Field(default=0, ge=0, description="0: no limit")


class QuotaConfig(BaseModel):
    default: TenantQuota = Field(
        default_factory=TenantQuota, description="Every tenant without an entry in `tenants`."
    )
    tenants: dict[str, TenantQuota] = Field(default_factory=dict)
    storage: str = Field(
        default="memory://",
        description="Where rate-limit counts live (a `limits` storage URL): memory:// per "
        "gateway replica (each allows the full rate), redis://HOST:PORT shared by all.",
    )
    refresh_s: float = Field(
        default=2.0, gt=0, description="How often a tenant's token total is re-read."
    )

    def for_tenant(self, tenant: str) -> TenantQuota:
        return self.tenants.get(tenant, self.default)


class QuotaExceeded(RetryLater):
    """Over a rate limit or quota: the caller's doing (``client_error`` in metrics); carries
    when to retry, which the gRPC edge sends as ``retry-after-ms`` trailing metadata."""

    counts_as = "client_error"


@dataclass
class _Tokens:
    day: str
    ledger: int  # tokens the ledger held for the day at the last read
    since: int  # tokens this replica answered since that read
    read_at: float


class Quotas:
    def __init__(
        self,
        config: QuotaConfig,
        tokens_today: Callable[[str, dt.date], int],
        on_refusal: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self.config = config
        self.tokens_today = tokens_today  # (tenant, day) -> the ledger's total
        self.on_refusal = on_refusal
        # An async storage: the URL with the "async+" scheme prefix `limits` uses for them.
        url = config.storage if config.storage.startswith("async+") else f"async+{config.storage}"
        self.limiter = MovingWindowRateLimiter(storage_from_string(url))
        self._tokens: dict[str, _Tokens] = {}

    async def admit(self, tenant: str) -> None:
        """Refuse the request when the tenant is over its rate or its token quota."""
        quota = self.config.for_tenant(tenant)
        if quota.tokens_per_day:
            used = await self.used_today(tenant)
            if used >= quota.tokens_per_day:
                self.on_refusal("tokens")
                now = dt.datetime.now(dt.UTC)
                midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
                raise QuotaExceeded(
                    f"tenant {tenant!r} used {used} of its {quota.tokens_per_day} tokens today "
                    "(UTC); the quota resets at 00:00 UTC",
                    retry_after_s=(midnight - now).total_seconds(),
                )
        if quota.requests_per_minute:
            item = RateLimitItemPerMinute(quota.requests_per_minute)
            if not await self.limiter.hit(item, "tenant", tenant):
                self.on_refusal("rate")
                stats = await self.limiter.get_window_stats(item, "tenant", tenant)
                raise QuotaExceeded(
                    f"tenant {tenant!r} is over its rate limit of "
                    f"{quota.requests_per_minute} requests per minute",
                    retry_after_s=max(0.0, stats.reset_time - time.time()),
                )

    async def used_today(self, tenant: str) -> int:
        day = dt.datetime.now(dt.UTC).date()
        entry = self._tokens.get(tenant)
        if (
            entry is None
            or entry.day != day.isoformat()
            or time.monotonic() - entry.read_at > self.config.refresh_s
        ):
            ledger = await asyncio.to_thread(self.tokens_today, tenant, day)
            entry = self._tokens[tenant] = _Tokens(day.isoformat(), ledger, 0, time.monotonic())
        return entry.ledger + entry.since

    def spent(self, tenant: str, tokens: int) -> None:
        """An answer's tokens, counted at once (the ledger has them too, read at the next
        refresh, which replaces this count)."""
        entry = self._tokens.get(tenant)
        if entry is not None:
            entry.since += tokens

    def snapshot(self, tenant: str) -> tuple[TenantQuota, int]:
        """The tenant's quota and the tokens counted today so far (for Usage)."""
        entry = self._tokens.get(tenant)
        return self.config.for_tenant(tenant), (entry.ledger + entry.since) if entry else 0
