"""The usage ledger on SQLite and on a real PostgreSQL server: sums per tenant, day and path."""

from __future__ import annotations

import datetime as dt

import pytest

from ragtune.common.errors import NotFound
from ragtune.gateway.ledger import Entry, Ledger

DAY1 = dt.datetime(2026, 11, 20, 23, 59, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 11, 21, 0, 1, tzinfo=dt.UTC)


def entry(request_id: str, tenant: str, path: str, cost: int, when: dt.datetime) -> Entry:
    return Entry(
        request_id=request_id,
        tenant=tenant,
        path=path,
        adapter="pirate" if path != "RAG" else "",
        collection="kb" if path != "TUNED" else "",
        reasons=("corpus_can_answer",),
        confidence=0.9,
        latency_ms=120.0,
        cost_micro_usd=cost,
        stage_costs={"generate": cost},
        prompt_tokens=10,
        completion_tokens=5,
        finish_reason="stop",
        created=when,
    )


def test_usage_sums_per_day_and_path_and_feedback_joins_its_request(database_url):
    ledger = Ledger(database_url)
    for e in [
        entry("a1", "acme", "RAG", 7, DAY1),
        entry("a2", "acme", "RAG", 5, DAY1),
        entry("a3", "acme", "TUNED", 3, DAY2),
        entry("g1", "globex", "RAG", 100, DAY1),
    ]:
        ledger.record(e)
    assert ledger.add_feedback("acme", "a1", 4, "good") == "RAG"
    assert ledger.add_feedback("acme", "a1", 2, "changed my mind") == "RAG"  # replaces
    with pytest.raises(NotFound):
        ledger.add_feedback("globex", "a1", 5, "")  # not globex's request
    rows = ledger.usage("acme", DAY1.date(), DAY2.date())
    got = [(r.day, r.path, r.requests, r.cost_micro_usd, r.rated, r.mean_rating) for r in rows]
    assert got == [
        ("2026-11-20", "RAG", 2, 12, 1, 2.0),
        ("2026-11-21", "TUNED", 1, 3, 0, 0.0),
    ]
    assert rows[0].prompt_tokens == 20 and rows[0].completion_tokens == 10
    assert [r.cost_micro_usd for r in ledger.usage("acme", DAY2.date(), DAY2.date())] == [3]
    ledger.close()


def test_one_request_rated_many_times_at_once_keeps_one_rating(database_url):
    """Several replicas may store a rating of the same request at the same moment (a client
    retrying): none fails, and one rating stands."""
    import concurrent.futures

    ledger = Ledger(database_url)
    ledger.record(entry("a1", "acme", "RAG", 7, DAY1))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda n: ledger.add_feedback("acme", "a1", 1 + n % 5, ""), range(8)))
    assert paths == ["RAG"] * 8
    (row,) = ledger.usage("acme", DAY1.date(), DAY1.date())
    assert row.rated == 1
    ledger.close()
