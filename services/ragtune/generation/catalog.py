"""The platform's adapters, in the database every generation replica shares.

An adapter registered with ``LoadAdapter`` on one replica is the platform's: every replica
reads this catalog, so a request for it on any replica (or on one started later) finds it,
and ``UnloadAdapter`` removes it everywhere. Each replica also records here, on every sync,
which adapters it holds, so ``ListAdapters`` shows where each is resident and an unload can
wait until no replica serves the adapter any more.

A removal is a tombstone (``removed``), so an adapter that ships in ``adapters_dir`` stays
unloaded on every replica until ``LoadAdapter`` names it again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import sqlalchemy as sa

from ragtune.common import database

metadata_obj = sa.MetaData()

adapters = sa.Table(
    "adapters",
    metadata_obj,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),  # a directory or an fsspec URL
    sa.Column("registered_by", sa.String(64), nullable=False, server_default=""),
    sa.Column("registered_at", sa.Float, nullable=False),
    # Bumped by every LoadAdapter: a replica holding an older version reloads the weights.
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("removed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("removed_at", sa.Float, nullable=False, server_default="0"),
)

replicas = sa.Table(
    "generation_replicas",
    metadata_obj,
    sa.Column("replica", sa.String(128), primary_key=True),
    sa.Column("synced_at", sa.Float, nullable=False),  # its last sync: a heartbeat
    sa.Column("resident", sa.Text, nullable=False),  # JSON list of adapter names
)


@dataclass(frozen=True)
class Entry:
    name: str
    source: str
    registered_by: str
    registered_at: float
    version: int
    removed: bool
    removed_at: float


@dataclass(frozen=True)
class ReplicaState:
    replica: str
    synced_at: float
    resident: frozenset[str]


class Catalog:
    def __init__(self, url: str) -> None:
        self.engine = database.connect(url)
        metadata_obj.create_all(self.engine)

    def register(self, name: str, source: str, registered_by: str) -> Entry:
        """Add the adapter, or replace its source (a new version), and clear a removal."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(adapters.c.version).where(adapters.c.name == name))
            previous = row.scalar()
            values = {
                "source": source,
                "registered_by": registered_by,
                "registered_at": time.time(),
                "version": (previous or 0) + 1,
                "removed": False,
                "removed_at": 0.0,
            }
            if previous is None:
                conn.execute(adapters.insert().values(name=name, **values))
            else:
                conn.execute(adapters.update().where(adapters.c.name == name).values(**values))
        return self.get(name)  # type: ignore[return-value]

    def remove(self, name: str) -> Entry:
        """Mark the adapter removed (a tombstone, kept so every replica sees it)."""
        now = time.time()
        with self.engine.begin() as conn:
            updated = conn.execute(
                adapters.update()
                .where(adapters.c.name == name)
                .values(removed=True, removed_at=now, version=adapters.c.version + 1)
            ).rowcount
            if not updated:  # a shipped adapter never registered here: record its removal
                conn.execute(
                    adapters.insert().values(
                        name=name, source="", registered_at=now, version=1,
                        removed=True, removed_at=now,
                    )
                )  # fmt: skip
        return self.get(name)  # type: ignore[return-value]

    def get(self, name: str) -> Entry | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(adapters).where(adapters.c.name == name)).first()
        return Entry(**row._mapping) if row is not None else None

    def entries(self) -> dict[str, Entry]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(adapters)).all()
        return {r.name: Entry(**r._mapping) for r in rows}

    def heartbeat(self, replica: str, resident: list[str]) -> None:
        """Record that ``replica`` synced now and holds ``resident``."""
        values = {"synced_at": time.time(), "resident": json.dumps(sorted(resident))}
        with self.engine.begin() as conn:
            updated = conn.execute(
                replicas.update().where(replicas.c.replica == replica).values(**values)
            ).rowcount
            if not updated:
                conn.execute(replicas.insert().values(replica=replica, **values))

    def live_replicas(self, max_age_s: float) -> list[ReplicaState]:
        """Replicas that synced within ``max_age_s`` (older rows: replicas that died)."""
        since = time.time() - max_age_s
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(replicas).where(replicas.c.synced_at >= since)).all()
        return [
            ReplicaState(r.replica, r.synced_at, frozenset(json.loads(r.resident))) for r in rows
        ]

    def forget(self, replica: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(replicas.delete().where(replicas.c.replica == replica))
