"""The usage ledger: every answered request's route decision and cost, and its feedback.

SQLAlchemy Core, so the same code runs on SQLite locally and PostgreSQL on a cluster. One row
per request, written before the reply's last message is sent, so every cost a client saw is in
the ledger; per-tenant, per-day totals are plain SQL sums over it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import sqlalchemy as sa

from ragtune.common import database
from ragtune.common.errors import InvalidArgument, NotFound, quote

metadata_obj = sa.MetaData()

requests = sa.Table(
    "ledger_requests",
    metadata_obj,
    sa.Column("request_id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("day", sa.String(10), nullable=False),  # YYYY-MM-DD, UTC
    sa.Column("created_unix_ms", sa.BigInteger, nullable=False),
    sa.Column("path", sa.String(8), nullable=False),
    sa.Column("adapter", sa.String(128), nullable=False),
    sa.Column("collection", sa.String(64), nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),  # JSON list of reason codes
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("cost_micro_usd", sa.BigInteger, nullable=False),
    sa.Column("stage_costs", sa.Text, nullable=False),  # JSON {stage: micro_usd}
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("finish_reason", sa.String(16), nullable=False),
    sa.Index("ix_ledger_tenant_day", "tenant", "day"),
)

feedback = sa.Table(
    "ledger_feedback",
    metadata_obj,
    sa.Column(
        "request_id",
        sa.String(32),
        sa.ForeignKey("ledger_requests.request_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("created_unix_ms", sa.BigInteger, nullable=False),
)


@dataclass(frozen=True)
class Entry:
    request_id: str
    tenant: str
    path: str
    adapter: str
    collection: str
    reasons: tuple[str, ...]
    confidence: float
    latency_ms: float
    cost_micro_usd: int
    stage_costs: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    created: dt.datetime  # UTC


@dataclass(frozen=True)
class UsageRow:
    day: str
    path: str
    requests: int
    cost_micro_usd: int
    prompt_tokens: int
    completion_tokens: int
    rated: int
    mean_rating: float


def parse_day(value: str, field: str) -> dt.date:
    # fromisoformat also takes forms such as "20260101" and "2026-W01-1": the API says
    # YYYY-MM-DD, so only that is taken.
    if len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise InvalidArgument(f"{quote(value)} is not a YYYY-MM-DD date", field=field)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(f"{quote(value)} is not a YYYY-MM-DD date", field=field) from None


def day_range(
    since: str, until: str, *, today: dt.date, default_days: int, max_days: int
) -> tuple[dt.date, dt.date]:
    """The (since, until) days of a usage query from the request's strings: ``until``
    defaults to ``today``, ``since`` to ``default_days`` before ``until``; at most
    ``max_days`` days apart, and never beyond the calendar's ends (0001-01-01 minus 30 days
    does not exist)."""
    last = parse_day(until, "until") if until else today
    if since:
        first = parse_day(since, "since")
    else:
        first = last - dt.timedelta(days=min(default_days, last.toordinal() - 1))
    if first > last:
        raise InvalidArgument(f"{first} is after until ({last})", field="since")
    if (last - first).days > max_days:
        raise InvalidArgument(
            f"{first} to {last} spans {(last - first).days} days; the limit is {max_days}",
            field="since",
        )
    return first, last


class Ledger:
    def __init__(self, url: str) -> None:
        self.engine = database.connect(url)
        metadata_obj.create_all(self.engine)

    def record(self, entry: Entry) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                requests.insert().values(
                    request_id=entry.request_id,
                    tenant=entry.tenant,
                    day=entry.created.date().isoformat(),
                    created_unix_ms=int(entry.created.timestamp() * 1000),
                    path=entry.path,
                    adapter=entry.adapter,
                    collection=entry.collection,
                    reasons=json.dumps(list(entry.reasons)),
                    confidence=entry.confidence,
                    latency_ms=entry.latency_ms,
                    cost_micro_usd=entry.cost_micro_usd,
                    stage_costs=json.dumps(entry.stage_costs),
                    prompt_tokens=entry.prompt_tokens,
                    completion_tokens=entry.completion_tokens,
                    finish_reason=entry.finish_reason,
                )
            )

    def add_feedback(self, tenant: str, request_id: str, rating: int, comment: str) -> str:
        """Store (or replace) the rating of one of ``tenant``'s requests; returns its path."""
        mine = (requests.c.request_id == request_id) & (requests.c.tenant == tenant)
        with self.engine.begin() as conn:
            # Write the request's row first: ratings of one request arriving at once (a retry,
            # two replicas) then replace each other in turn instead of colliding on the key.
            claimed = conn.execute(requests.update().where(mine).values(path=requests.c.path))
            if claimed.rowcount == 0:
                raise NotFound(f"no request {quote(request_id)} of this tenant in the ledger")
            path = conn.execute(sa.select(requests.c.path).where(mine)).scalar_one()
            conn.execute(feedback.delete().where(feedback.c.request_id == request_id))
            conn.execute(
                feedback.insert().values(
                    request_id=request_id,
                    rating=rating,
                    comment=comment,
                    created_unix_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000),
                )
            )
        return path

    def usage(self, tenant: str, since: dt.date, until: dt.date) -> list[UsageRow]:
        r, f = requests, feedback
        query = (
            sa.select(
                r.c.day,
                r.c.path,
                sa.func.count().label("requests"),
                sa.func.sum(r.c.cost_micro_usd),
                sa.func.sum(r.c.prompt_tokens),
                sa.func.sum(r.c.completion_tokens),
                sa.func.count(f.c.rating),
                sa.func.avg(f.c.rating),
            )
            .select_from(r.outerjoin(f, f.c.request_id == r.c.request_id))
            .where(
                r.c.tenant == tenant,
                r.c.day >= since.isoformat(),
                r.c.day <= until.isoformat(),
            )
            .group_by(r.c.day, r.c.path)
            .order_by(r.c.day, r.c.path)
        )
        with self.engine.connect() as conn:
            return [
                UsageRow(
                    day,
                    path,
                    int(n),
                    int(cost or 0),
                    int(pt or 0),
                    int(ct or 0),
                    int(rated),
                    float(mean or 0.0),
                )
                for day, path, n, cost, pt, ct, rated, mean in conn.execute(query)
            ]

    def tokens_on(self, tenant: str, day: dt.date) -> int:
        """Prompt + completion tokens of ``tenant``'s answers on ``day`` (UTC): its quota use."""
        query = sa.select(
            sa.func.coalesce(
                sa.func.sum(requests.c.prompt_tokens + requests.c.completion_tokens), 0
            )
        ).where(requests.c.tenant == tenant, requests.c.day == day.isoformat())
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def close(self) -> None:
        self.engine.dispose()
