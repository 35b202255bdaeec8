"""Bulk ingests: the Ingest calls sharing one ``ingest_id``, so a collection's status can say
whether its last bulk ingest completed (``GetCollection``) and a client can resume one.

A row per (tenant, collection, ingest_id) in the gateway's database (beside the ledger). Calls
of one run may arrive concurrently (a client keeps several in flight), so counts are added in
SQL (``documents = documents + n``), never read-modify-written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

metadata_obj = sa.MetaData()

runs = sa.Table(
    "ingest_runs",
    metadata_obj,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("collection", sa.String(64), primary_key=True),
    sa.Column("ingest_id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(256), nullable=False),
    sa.Column("documents", sa.BigInteger, nullable=False),
    sa.Column("chunks", sa.BigInteger, nullable=False),
    sa.Column("started_unix_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_unix_ms", sa.BigInteger, nullable=False),
    sa.Column("complete", sa.Boolean, nullable=False),
)


@dataclass(frozen=True)
class IngestRun:
    ingest_id: str
    source: str
    documents: int
    chunks: int
    started_unix_ms: int
    updated_unix_ms: int
    complete: bool


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


class IngestRuns:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata_obj.create_all(engine)

    def add(
        self,
        tenant: str,
        collection: str,
        ingest_id: str,
        *,
        source: str,
        documents: int,
        chunks: int,
        final: bool,
    ) -> IngestRun:
        """Count one acknowledged call into its run (made on its first call); return the run."""
        key = (
            (runs.c.tenant == tenant)
            & (runs.c.collection == collection)
            & (runs.c.ingest_id == ingest_id)
        )
        now = _now_ms()
        update = (
            runs.update()
            .where(key)
            .values(
                documents=runs.c.documents + documents,
                chunks=runs.c.chunks + chunks,
                updated_unix_ms=now,
                complete=runs.c.complete | sa.literal(final),
            )
        )
        insert = runs.insert().values(
            tenant=tenant,
            collection=collection,
            ingest_id=ingest_id,
            source=source,
            documents=documents,
            chunks=chunks,
            started_unix_ms=now,
            updated_unix_ms=now,
            complete=final,
        )
        for _ in range(2):
            try:
                with self.engine.begin() as conn:
                    if conn.execute(update).rowcount == 0:
                        conn.execute(insert)
                    return _run(conn.execute(sa.select(runs).where(key)).one())
            except sa.exc.IntegrityError:
                continue  # a concurrent first call inserted the row: the update applies now
        raise RuntimeError("ingest run row could not be written")  # pragma: no cover

    def last(self, tenant: str, collection: str) -> IngestRun | None:
        """The run of ``collection`` that was written to last."""
        query = (
            sa.select(runs)
            .where(runs.c.tenant == tenant, runs.c.collection == collection)
            .order_by(runs.c.updated_unix_ms.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        return _run(row) if row is not None else None

    def forget(self, tenant: str, collection: str) -> None:
        """A deleted collection's runs go with it (a new one of that name starts afresh)."""
        with self.engine.begin() as conn:
            conn.execute(
                runs.delete().where(runs.c.tenant == tenant, runs.c.collection == collection)
            )


def _run(row: sa.Row) -> IngestRun:
    return IngestRun(
        row.ingest_id,
        row.source,
        int(row.documents),
        int(row.chunks),
        int(row.started_unix_ms),
        int(row.updated_unix_ms),
        bool(row.complete),
    )
