"""Index snapshots: a replica's in-memory indexes written to disk with the change-log sequence
number they reflect, so a restarted replica loads the newest one and replays only the changes
logged after it instead of rebuilding every index from the database.

Snapshots are derived state like the indexes themselves: the database stays the source of
truth, a missing or unreadable snapshot only means a slower start. Files are written to a
temporary name and renamed, so a replica killed mid-write leaves no partial snapshot; the
newest ``keep`` are kept. They are pickles of ragtune's own objects, read only from the
deployment's own ``snapshot_dir``.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ragtune.retrieval.store import ChunkRow

log = logging.getLogger(__name__)

_NAME = re.compile(r"^snapshot-(\d{12})\.pkl$")
FORMAT = 1


@dataclass
class CollectionState:
    dims: int
    metric: str
    index_type: str
    lexical: bool
    rows: list[ChunkRow]
    ann: bytes | None  # the serialised ANN index (HNSW graph, trained IVF-PQ), if any


@dataclass
class Snapshot:
    seq: int
    collections: dict[int, CollectionState]


def _snapshots(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def latest_seq(folder: Path) -> int:
    snapshots = _snapshots(folder)
    return snapshots[0][0] if snapshots else 0


def save(folder: Path, snapshot: Snapshot, *, keep: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"snapshot-{snapshot.seq:012d}.pkl"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".snapshot-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump((FORMAT, snapshot), f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for _, old in _snapshots(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_latest(folder: Path) -> Snapshot | None:
    """The newest readable snapshot; unreadable ones are logged and skipped."""
    for seq, path in _snapshots(folder):
        try:
            with path.open("rb") as f:
                version, snapshot = pickle.load(f)
            if version == FORMAT and snapshot.seq == seq:
                return snapshot
            log.warning("snapshot %s has format %s; ignoring it", path, version)
        except Exception:
            log.warning("snapshot %s is unreadable; trying an older one", path, exc_info=True)
    return None
