"""Learning from feedback: ratings and path overrides move the router's thresholds.

A rated answer whose route the probe or an adapter's example requests decided says something
about that decision: a poor rating of a retrieving answer, or a client saying the request
should have gone TUNED, means the collection's threshold let through a question it cannot
answer; a poor TUNED answer, or "should have searched", the opposite. Each such signal moves
the collection's (or the adapter's cue) threshold by ``step`` (once per request: rating it
again changes nothing), never further than
``max_offset`` from its fit, so no run of feedback can turn the router around; an operator
sees every change (``ragtune route adjustments``) and takes it back (``ragtune route reset``).

Which decision a rating refers to is kept per request in ``router_decisions`` (the collection
probed, even when the route did not search it; the adapter chosen by similarity); offsets and
their history are rows too, in the gateway's database, so every replica reads the same ones.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ragtune.gateway.config import FeedbackConfig

metadata_obj = sa.MetaData()

decisions = sa.Table(
    "router_decisions",
    metadata_obj,
    sa.Column("request_id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("path", sa.String(8), nullable=False),
    sa.Column("collection", sa.String(64), nullable=False),  # probed; "" when no probe decided
    sa.Column("probe_decided", sa.Boolean, nullable=False),  # whether to retrieve
    sa.Column("cue_adapter", sa.String(128), nullable=False),  # chosen by similarity, or ""
)

offsets = sa.Table(
    "router_offsets",
    metadata_obj,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("scope", sa.String(16), primary_key=True),  # "collection" or "adapter"
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("offset", sa.Float, nullable=False),
    sa.Column("updated_unix_ms", sa.BigInteger, nullable=False),
)

history = sa.Table(
    "router_adjustments",
    metadata_obj,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("request_id", sa.String(32), nullable=False),  # "" for an operator's reset
    sa.Column("before", sa.Float, nullable=False),
    sa.Column("after", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_unix_ms", sa.BigInteger, nullable=False),
)

SCOPES = ("collection", "adapter")


@dataclass(frozen=True)
class Decision:
    """What feedback on a request can be attributed to."""

    request_id: str
    tenant: str
    path: str  # "RAG", "TUNED", "HYBRID"
    collection: str
    probe_decided: bool  # the probe decided whether to retrieve (not a rule or the request)
    cue_adapter: str


@dataclass(frozen=True)
class Adjustment:
    tenant: str
    scope: str
    name: str
    request_id: str
    before: float
    after: float
    reason: str
    created_unix_ms: int

    def describe(self) -> str:
        return (
            f"{self.scope} {self.name!r} threshold offset {self.before:+.3f} -> "
            f"{self.after:+.3f}: {self.reason}"
        )


def planned(
    decision: Decision, rating: int, preferred: str, config: FeedbackConfig
) -> list[tuple[str, str, float, str]]:
    """(scope, name, delta, reason) for one piece of feedback; [] when it says nothing about
    a threshold. A preferred path is a full step; a bad rating alone half of one."""
    bad = rating <= config.low_rating
    if not (preferred or bad):
        return []
    signal = f"the client preferred {preferred}" if preferred else f"rated {rating}"
    step = config.step if preferred else config.step / 2
    moves = []
    if decision.collection and decision.probe_decided:
        retrieved = decision.path in ("RAG", "HYBRID")
        wanted = preferred in ("RAG", "HYBRID") if preferred else not retrieved
        if retrieved != wanted:
            verb = "retrieved" if retrieved else "did not retrieve"
            delta = step if retrieved else -step
            moves.append(("collection", decision.collection, delta, f"{verb}, but {signal}"))
    if decision.cue_adapter and (preferred == "RAG" if preferred else bad):
        moves.append(("adapter", decision.cue_adapter, step, f"chosen by similarity, but {signal}"))
    return moves


class RouterFeedback:
    def __init__(self, engine: Engine, config: FeedbackConfig, cache_s: float = 5.0) -> None:
        self.engine, self.config, self.cache_s = engine, config, cache_s
        metadata_obj.create_all(engine)
        self._cache: dict[str, tuple[float, dict[tuple[str, str], float]]] = {}

    # -- writes ----------------------------------------------------------------------------------

    def remember(self, decision: Decision) -> None:
        with self.engine.begin() as conn:
            conn.execute(decisions.insert().values(**decision.__dict__))

    def apply(self, tenant: str, request_id: str, rating: int, preferred: str) -> list[Adjustment]:
        """Feedback on one of ``tenant``'s answered requests; returns what it changed."""
        if not self.config.enabled:
            return []
        for _ in range(3):
            try:
                return self._apply(tenant, request_id, rating, preferred)
            except sa.exc.IntegrityError:
                continue  # a concurrent feedback created the same offset row: move it now
        raise RuntimeError("feedback could not be applied")  # pragma: no cover

    def _apply(self, tenant: str, request_id: str, rating: int, preferred: str) -> list[Adjustment]:
        # Feedback comes to any replica at any time. Each step writes before it reads, so
        # concurrent ones serialise: the decision's row (the same request rated twice at once
        # counts once) and each offset's row (two requests moving one threshold both count);
        # SQLite takes its write lock at the first write, PostgreSQL locks the rows.
        with self.engine.begin() as conn:
            mine = (decisions.c.request_id == request_id) & (decisions.c.tenant == tenant)
            claimed = conn.execute(decisions.update().where(mine).values(path=decisions.c.path))
            if claimed.rowcount == 0:
                return []
            row = conn.execute(sa.select(decisions).where(mine)).one()
            counted = conn.execute(
                sa.select(history.c.id).where(history.c.request_id == request_id).limit(1)
            ).first()
            if counted is not None:
                return []  # a request moves thresholds once: rating it again changes nothing
            decision = Decision(**row._mapping)
            done = []
            for scope, name, delta, reason in planned(decision, rating, preferred, self.config):
                done += self._move(conn, tenant, scope, name, request_id, delta, reason)
        self._cache.pop(tenant, None)
        return done

    def _move(self, conn, tenant, scope, name, request_id, delta, reason) -> list[Adjustment]:
        key = (offsets.c.tenant == tenant) & (offsets.c.scope == scope) & (offsets.c.name == name)
        # Claim the row before reading it: lock it, or create it at 0 (a concurrent first
        # feedback on the same threshold then fails on the key and is retried, and reads ours).
        if conn.execute(offsets.update().where(key).values(offset=offsets.c.offset)).rowcount == 0:
            conn.execute(offsets.insert().values(tenant=tenant, scope=scope, name=name,
                                                 offset=0.0, updated_unix_ms=0))  # fmt: skip
        before = conn.execute(sa.select(offsets.c.offset).where(key)).scalar_one()
        limit = self.config.max_offset
        after = round(max(-limit, min(limit, before + delta)), 6)
        return self._set(conn, tenant, scope, name, request_id, before, after, reason)

    def _set(
        self, conn, tenant, scope, name, request_id, before, after, reason
    ) -> list[Adjustment]:
        if abs(after - before) < 1e-9:
            return []  # at its bound already: nothing changed, nothing to log
        now = int(time.time() * 1000)
        key = (offsets.c.tenant == tenant) & (offsets.c.scope == scope) & (offsets.c.name == name)
        conn.execute(offsets.update().where(key).values(offset=after, updated_unix_ms=now))
        change = Adjustment(tenant, scope, name, request_id, before, after, reason, now)
        conn.execute(history.insert().values(**change.__dict__))
        return [change]

    def reset(
        self, tenant: str, scope: str, name: str, reason: str = "reset by an operator"
    ) -> list[Adjustment]:
        """Take a threshold back to its fit (the change is logged like any other)."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        with self.engine.begin() as conn:
            key = (
                (offsets.c.tenant == tenant) & (offsets.c.scope == scope) & (offsets.c.name == name)
            )
            before = conn.execute(sa.select(offsets.c.offset).where(key)).scalar_one_or_none()
            if before is None:
                return []
            done = self._set(conn, tenant, scope, name, "", before, 0.0, reason)
        self._cache.pop(tenant, None)
        return done

    # -- reads -----------------------------------------------------------------------------------

    def offsets(self, tenant: str) -> dict[tuple[str, str], float]:
        """{(scope, name): offset} of the tenant's thresholds."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(offsets).where(offsets.c.tenant == tenant))
            return {(r.scope, r.name): r.offset for r in rows}

    async def cached_offsets(self, tenant: str) -> dict[tuple[str, str], float]:
        """``offsets``, reread every ``cache_s`` (other replicas apply feedback too)."""
        cached = self._cache.get(tenant)
        if cached is not None and time.monotonic() - cached[0] < self.cache_s:
            return cached[1]
        found = await asyncio.to_thread(self.offsets, tenant)
        self._cache[tenant] = (time.monotonic(), found)
        return found

    def adjustments(self, tenant: str | None = None, limit: int = 50) -> list[Adjustment]:
        """The latest changes, newest first (every tenant's when ``tenant`` is None)."""
        query = sa.select(history).order_by(history.c.id.desc()).limit(limit)
        if tenant is not None:
            query = query.where(history.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [
                Adjustment(**{k: v for k, v in r._mapping.items() if k != "id"})
                for r in conn.execute(query)
            ]
