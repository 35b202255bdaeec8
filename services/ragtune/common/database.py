"""SQLAlchemy engines for the platform's databases (SQLite embedded, PostgreSQL on a cluster)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets replicas read while one writes; busy_timeout waits instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def connect(url: str) -> sa.Engine:
    """An engine for ``url``; a SQLite file's folder is made, and several processes (replicas)
    may use the file at once."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine
