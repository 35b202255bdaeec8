"""A replica's in-memory indexes, and how they follow the database.

Each collection's dense index (and lexical index, when it has one) is built from the store, or
from the newest snapshot, the first time it is needed, then kept in step by applying the change
log in order; ``applied_seq`` is the last change applied. The service (``service.py``) lets one
caller at a time change this state.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ragtune.retrieval import snapshots
from ragtune.retrieval.backend import CollectionIndex
from ragtune.retrieval.lexical import LexicalIndex
from ragtune.retrieval.store import Store

log = logging.getLogger(__name__)


class ReplicaIndexes:
    def __init__(self, store: Store, snapshot_dir: Path | None) -> None:
        self.store = store
        self.snapshot_dir = snapshot_dir
        self.dense: dict[int, CollectionIndex] = {}  # collection id -> index
        self.lexical: dict[int, LexicalIndex] = {}  # lexical collections only
        self.applied_seq = 0

    def restore_snapshot(self) -> None:
        """Start from the newest snapshot (its collections that still exist unchanged); the
        change log after its seq is replayed by ``catch_up``."""
        if self.snapshot_dir is None:
            return
        snapshot = snapshots.load_latest(self.snapshot_dir)
        if snapshot is None:
            return
        for cid, state in snapshot.collections.items():
            row = self.store.collection_by_id(cid)
            settings = (state.dims, state.metric, state.index_type, state.lexical)
            if row is None or (row.dims, row.metric, row.index_type, row.lexical) != settings:
                continue  # dropped (or its id reused) since: loaded from the database if needed
            index = CollectionIndex(row.dims, row.metric, row.index_type)
            index.restore(state.rows, state.ann)
            self.dense[cid] = index
            if row.lexical:
                self.lexical[cid] = LexicalIndex()
                self.lexical[cid].replace_documents({r.doc_id for r in state.rows}, state.rows)
        self.applied_seq = snapshot.seq
        log.info("restored %d collections from the snapshot at seq %d",
                 len(self.dense), snapshot.seq)  # fmt: skip

    def export(self) -> snapshots.Snapshot:
        """A consistent copy of the indexes at ``applied_seq`` (the caller holds the service's
        lock)."""
        states = {}
        for cid, index in self.dense.items():
            rows, ann = index.export()
            states[cid] = snapshots.CollectionState(
                index.dims, index.metric, index.index_type, cid in self.lexical, rows, ann
            )
        return snapshots.Snapshot(self.applied_seq, states)

    def catch_up(self) -> set[int]:
        """Apply every change logged after ``applied_seq`` to the in-memory indexes; returns
        the ids of the collections dropped meanwhile."""
        dropped: set[int] = set()
        for change in self.store.changes_since(self.applied_seq):
            if change.op == "drop":
                self.dense.pop(change.collection_id, None)
                self.lexical.pop(change.collection_id, None)
                dropped.add(change.collection_id)
            else:
                already = change.collection_id in self.dense
                index = self.index_for(change.collection_id)
                if already and index is not None and change.doc_ids:
                    rows = self.store.load_chunks(change.collection_id, change.doc_ids)
                    index.replace_documents(change.doc_ids, rows)
                    if change.collection_id in self.lexical:
                        self.lexical[change.collection_id].replace_documents(change.doc_ids, rows)
            self.applied_seq = change.seq
        return dropped

    def index_for(self, collection_id: int) -> CollectionIndex | None:
        """The collection's dense index (and its lexical one), loaded from the store the first
        time: they then hold every change up to the store's present state."""
        if collection_id not in self.dense:
            row = self.store.collection_by_id(collection_id)
            if row is None:  # dropped later in the log
                return None
            index = CollectionIndex(row.dims, row.metric, row.index_type)
            all_rows = self.store.load_chunks(collection_id)
            docs = {r.doc_id for r in all_rows}
            index.replace_documents(docs, all_rows)
            self.dense[collection_id] = index
            if row.lexical:
                self.lexical[collection_id] = LexicalIndex()
                self.lexical[collection_id].replace_documents(docs, all_rows)
        return self.dense[collection_id]
