"""A request's time budget, end to end: the client's deadline (or ``latency_budget_ms``) becomes
each stage's remaining time; a stage that cannot start in time is not started, and generation
is stopped when the budget ends (closing its stream aborts it inside the engine).

Serve's ingresses do not pass gRPC's own deadline (``grpc-timeout``) on to the replica, so
clients send it as metadata too: ``ragtune-timeout-ms`` (the documented client does, from its
per-call timeout). Both are relative, so no clock is shared between client and server.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ragtune.common.errors import DeadlineExceeded, InvalidArgument

TIMEOUT_HEADER = "ragtune-timeout-ms"


@dataclass(frozen=True)
class Deadline:
    at: float | None  # time.monotonic() when the budget ends; None: no budget
    budget_ms: float = 0

    @classmethod
    def start(cls, latency_budget_ms: int, timeout_header: str = "") -> Deadline:
        """The tighter of the request's budget and the client's timeout, from now."""
        budgets: list[float] = [latency_budget_ms] if latency_budget_ms > 0 else []
        if timeout_header:
            try:
                value = float(timeout_header)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise InvalidArgument(
                    "must be a number of milliseconds", field=f"metadata {TIMEOUT_HEADER}"
                )
            budgets.append(value)
        budgets = [b for b in budgets if b > 0]
        if not budgets:
            return cls(None)
        budget = min(budgets)
        return cls(time.monotonic() + budget / 1000, budget)

    def remaining_s(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    def check(self, stage: str) -> None:
        """Refuse to start ``stage`` once the budget is spent."""
        remaining = self.remaining_s()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded(
                f"the {self.budget_ms:g} ms budget ended before the {stage} stage; "
                "nothing more was started"
            )
