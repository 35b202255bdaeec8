"""Chaos under load on the real platform (issue 21's acceptance; docs/security.md#chaos-under-load):
with the load toolkit's traffic on the public port, one SIGKILLed replica of each service costs
no idempotent call (the client's and the gateway's retries), each is back within 30 s, and every
acknowledged Ingest is still found by a search afterwards."""

from __future__ import annotations

import asyncio

import pytest

from ragtune.common.services import SERVICES
from ragtune.loadtest.chaos import SERVICES as KILLED
from ragtune.loadtest.chaos import ChaosSettings, passed, replica_actors, run_chaos, table
from ragtune.local import wait_running

pytestmark = pytest.mark.integration


def test_killing_a_replica_of_each_service_under_load_loses_nothing(platform, demo):
    before = {name: replica_actors(spec.name, spec.deployment) for name, spec in KILLED.items()}
    settings = ChaosSettings(users=2, warmup_s=2, settle_s=1, recovery_timeout_s=90)
    try:
        result = asyncio.run(run_chaos(platform.target, platform.acme_key, settings))
    finally:
        # Later tests share this platform: every application must be serving again.
        wait_running([spec.name for spec in SERVICES], timeout_s=180)

    print(table(result))  # the figures, with -s or on failure
    summary, phases = result["summary"], result["services"]
    assert summary["killed"] == list(KILLED), summary
    for name, spec in KILLED.items():
        phase = phases[name]
        # The kill happened (a new replica runs in the killed one's place) under traffic.
        assert phase["pid"] in before[name].values()
        assert phase["pid"] not in replica_actors(spec.name, spec.deployment).values()
        assert phase["idempotent"]["sent"] > 0 and phase["non_idempotent"]["sent"] > 0, name
        assert phase["writes"]["acknowledged"] > 0, name
    # The acceptance: no idempotent failure after retries, recovery under 30 s, no lost write
    # (each acknowledged document cited by a RAG answer filtered to it). Generation runs on
    # vLLM here, the slowest to start: 25 s measured on these 2 shared cores
    # (docs/security.md#chaos-under-load).
    assert passed(result, recovery_limit_s=30) == [], table(result)
    assert summary["writes_found"] == summary["writes_acknowledged"] > len(KILLED)
