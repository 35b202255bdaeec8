"""The source of truth: collections, chunks and an append-only change log, via SQLAlchemy Core.

Every write is one transaction that also appends to ``changes``; the change's ``seq`` is the
sequence number clients use to read their own writes. Indexes replay this log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa

from ragtune.common import database
from ragtune.common.errors import AlreadyExists, InvalidArgument, NotFound

metadata_obj = sa.MetaData()

collections = sa.Table(
    "collections",
    metadata_obj,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("dims", sa.Integer, nullable=False),
    sa.Column("embedding_model", sa.String(256), nullable=False),
    sa.Column("metric", sa.String(8), nullable=False, server_default="ip"),
    sa.Column("index_type", sa.String(16), nullable=False, server_default="flat"),
    sa.Column("lexical", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("tenant", "name"),
)

chunks = sa.Table(
    "chunks",
    metadata_obj,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # the FAISS id
    sa.Column(
        "collection_id",
        sa.Integer,
        sa.ForeignKey("collections.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("doc_id", sa.String(512), nullable=False),
    sa.Column("chunk_id", sa.String(600), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("meta", sa.Text, nullable=False),  # JSON object of strings
    sa.Column("vector", sa.LargeBinary, nullable=False),  # float32 little-endian
    # SHA-256 of the whole document's chunks: an unchanged document is not rewritten.
    sa.Column("doc_hash", sa.String(64), nullable=False, server_default=""),
    sa.UniqueConstraint("collection_id", "chunk_id"),
    sa.Index("ix_chunks_doc", "collection_id", "doc_id"),
)

changes = sa.Table(
    "changes",
    metadata_obj,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("collection_id", sa.Integer, nullable=False),
    sa.Column("op", sa.String(16), nullable=False),  # create | upsert | delete | drop
    sa.Column("doc_ids", sa.Text, nullable=False),  # JSON list
)


@dataclass(frozen=True)
class CollectionRow:
    id: int
    tenant: str
    name: str
    dims: int
    embedding_model: str
    metric: str = "ip"  # ip (cosine on normalised vectors) | l2
    index_type: str = "flat"
    lexical: bool = False

    @property
    def settings(self) -> tuple[int, str, str, str, bool]:
        return (self.dims, self.embedding_model, self.metric, self.index_type, self.lexical)


@dataclass(frozen=True)
class ChunkRow:
    id: int
    doc_id: str
    chunk_id: str
    text: str
    metadata: dict[str, str]
    vector: np.ndarray


@dataclass(frozen=True)
class NewChunk:
    doc_id: str
    chunk_id: str
    text: str
    metadata: dict[str, str]
    vector: np.ndarray


@dataclass(frozen=True)
class Change:
    seq: int
    collection_id: int
    op: str
    doc_ids: list[str] = field(default_factory=list)


def _document_hashes(new: Sequence[NewChunk]) -> dict[str, str]:
    """SHA-256 per document over its chunks' ids, texts, metadata and vectors."""
    digests: dict[str, hashlib._Hash] = {}
    for c in sorted(new, key=lambda c: (c.doc_id, c.chunk_id)):
        h = digests.setdefault(c.doc_id, hashlib.sha256())
        h.update(c.chunk_id.encode() + b"\0" + c.text.encode() + b"\0")
        h.update(json.dumps(c.metadata, sort_keys=True).encode() + b"\0")
        h.update(np.asarray(c.vector, dtype="<f4").tobytes())
    return {doc: h.hexdigest() for doc, h in digests.items()}


class Store:
    def __init__(self, url: str) -> None:
        self.engine = database.connect(url)
        metadata_obj.create_all(self.engine)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Databases made by older versions lack newer columns: add them with their defaults
        (the only schema change so far; a migration tool comes with the first real one)."""
        inspector = sa.inspect(self.engine)
        dialect = self.engine.dialect
        for table in (collections, chunks):
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                default = column.server_default.arg
                default_sql = (
                    f"'{default}'" if isinstance(default, str) else default.compile(dialect=dialect)
                )
                kind = column.type.compile(dialect=dialect)
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.text(
                            f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind} "
                            f"NOT NULL DEFAULT {default_sql}"
                        )
                    )

    # -- collections -------------------------------------------------------------------------

    def get_collection(self, tenant: str, name: str) -> CollectionRow:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(collections).where(
                    collections.c.tenant == tenant, collections.c.name == name
                )
            ).first()
        if row is None:
            # Same message whether it is missing or another tenant's: existence is not revealed.
            raise NotFound(f"collection {name!r} not found")
        return CollectionRow(*row)

    def list_collections(self, tenant: str | None = None) -> list[CollectionRow]:
        query = sa.select(collections).order_by(collections.c.name)
        if tenant is not None:
            query = query.where(collections.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [CollectionRow(*row) for row in conn.execute(query)]

    def create_collection(
        self, wanted: CollectionRow, *, exist_ok: bool
    ) -> tuple[CollectionRow, int]:
        """Create ``wanted`` (its id is ignored); returns (row, seq), seq 0 if it existed."""
        tenant, name = wanted.tenant, wanted.name
        with self.engine.begin() as conn:
            existing = conn.execute(
                sa.select(collections).where(
                    collections.c.tenant == tenant, collections.c.name == name
                )
            ).first()
            if existing is not None:
                row = CollectionRow(*existing)
                if exist_ok and row.settings == wanted.settings:
                    return row, 0
                raise AlreadyExists(
                    f"collection {name!r} already exists with dims={row.dims}, "
                    f"embedding_model={row.embedding_model!r}, metric={row.metric!r}, "
                    f"index_type={row.index_type!r}, lexical={row.lexical}"
                )
            cid = conn.execute(
                collections.insert().values(
                    tenant=tenant,
                    name=name,
                    dims=wanted.dims,
                    embedding_model=wanted.embedding_model,
                    metric=wanted.metric,
                    index_type=wanted.index_type,
                    lexical=wanted.lexical,
                )
            ).inserted_primary_key[0]
            seq = self._log(conn, cid, "create", [])
        return dataclasses.replace(wanted, id=cid), seq

    @staticmethod
    def _lock_collection(conn: sa.Connection, collection: CollectionRow) -> None:
        """Lock ``collection``'s row for the rest of the transaction, or raise NotFound when it
        is gone (dropped by a write that committed first, perhaps through another replica).

        A no-op UPDATE, not a SELECT: it takes the write lock first thing on SQLite too, where
        a transaction that read first could not write after another one's commit, and on
        PostgreSQL it holds a concurrent drop until this write commits."""
        locked = conn.execute(
            collections.update()
            .where(collections.c.id == collection.id)
            .values(id=collections.c.id)
        ).rowcount
        if not locked:
            raise NotFound(f"collection {collection.name!r} not found")

    def drop_collection(self, collection: CollectionRow) -> int:
        with self.engine.begin() as conn:
            self._lock_collection(conn, collection)
            conn.execute(chunks.delete().where(chunks.c.collection_id == collection.id))
            conn.execute(collections.delete().where(collections.c.id == collection.id))
            return self._log(conn, collection.id, "drop", [])

    def counts(self, collection_id: int) -> tuple[int, int]:
        """(chunks, distinct documents) stored in a collection."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(sa.func.count(), sa.func.count(sa.distinct(chunks.c.doc_id))).where(
                    chunks.c.collection_id == collection_id
                )
            ).one()
        return int(row[0]), int(row[1])

    # -- chunks ------------------------------------------------------------------------------

    def upsert(self, collection: CollectionRow, new: Sequence[NewChunk]) -> tuple[int, int]:
        """Replace every chunk of the documents in ``new``; returns (seq, replaced documents).

        Documents whose content hash is unchanged are left alone; when nothing changed, no
        change is logged and the returned seq is the log's current one (already visible)."""
        for i, chunk in enumerate(new):
            if chunk.vector.shape != (collection.dims,):
                raise InvalidArgument(
                    f"vector has {chunk.vector.shape[0]} dims; collection {collection.name!r} "
                    f"has {collection.dims}",
                    field=f"chunks[{i}].vector",
                )
        hashes = _document_hashes(new)
        with self.engine.begin() as conn:
            self._lock_collection(conn, collection)
            stored = dict(
                conn.execute(
                    sa.select(chunks.c.doc_id, sa.func.max(chunks.c.doc_hash))
                    .where(
                        chunks.c.collection_id == collection.id,
                        chunks.c.doc_id.in_(list(hashes)),
                    )
                    .group_by(chunks.c.doc_id)
                ).all()
            )
            doc_ids = sorted(d for d, h in hashes.items() if stored.get(d) != h)
            if not doc_ids:
                return self._last_seq(conn), 0
            changed = set(doc_ids)
            new = [c for c in new if c.doc_id in changed]
            replaced = sum(1 for d in doc_ids if d in stored)
            conn.execute(
                chunks.delete().where(
                    chunks.c.collection_id == collection.id, chunks.c.doc_id.in_(doc_ids)
                )
            )
            conn.execute(
                chunks.insert(),
                [
                    {
                        "collection_id": collection.id,
                        "doc_id": c.doc_id,
                        "chunk_id": c.chunk_id,
                        "text": c.text,
                        "meta": json.dumps(c.metadata, sort_keys=True),
                        "vector": np.asarray(c.vector, dtype="<f4").tobytes(),
                        "doc_hash": hashes[c.doc_id],
                    }
                    for c in new
                ],
            )
            seq = self._log(conn, collection.id, "upsert", doc_ids)
        return seq, int(replaced)

    def delete_documents(
        self, collection: CollectionRow, doc_ids: Sequence[str]
    ) -> tuple[int, int]:
        with self.engine.begin() as conn:
            self._lock_collection(conn, collection)
            deleted = conn.execute(
                chunks.delete().where(
                    chunks.c.collection_id == collection.id, chunks.c.doc_id.in_(list(doc_ids))
                )
            ).rowcount
            seq = self._log(conn, collection.id, "delete", sorted(set(doc_ids)))
        return seq, int(deleted)

    def load_chunks(
        self, collection_id: int, doc_ids: Iterable[str] | None = None
    ) -> list[ChunkRow]:
        query = sa.select(chunks).where(chunks.c.collection_id == collection_id)
        if doc_ids is not None:
            query = query.where(chunks.c.doc_id.in_(list(doc_ids)))
        with self.engine.connect() as conn:
            return [
                ChunkRow(
                    id=row.id,
                    doc_id=row.doc_id,
                    chunk_id=row.chunk_id,
                    text=row.text,
                    metadata=json.loads(row.meta),
                    vector=np.frombuffer(row.vector, dtype="<f4"),
                )
                for row in conn.execute(query.order_by(chunks.c.id))
            ]

    # -- change log --------------------------------------------------------------------------

    @staticmethod
    def _log(conn: sa.Connection, collection_id: int, op: str, doc_ids: list[str]) -> int:
        return int(
            conn.execute(
                changes.insert().values(
                    collection_id=collection_id, op=op, doc_ids=json.dumps(doc_ids)
                )
            ).inserted_primary_key[0]
        )

    def changes_since(self, seq: int) -> list[Change]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(changes).where(changes.c.seq > seq).order_by(changes.c.seq)
            ).all()
        return [Change(r.seq, r.collection_id, r.op, json.loads(r.doc_ids)) for r in rows]

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return self._last_seq(conn)

    @staticmethod
    def _last_seq(conn: sa.Connection) -> int:
        return int(
            conn.execute(sa.select(sa.func.coalesce(sa.func.max(changes.c.seq), 0))).scalar_one()
        )

    def collection_by_id(self, collection_id: int) -> CollectionRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(collections).where(collections.c.id == collection_id)
            ).first()
        return CollectionRow(*row) if row else None
