"""API keys → principals (tenant, admin flag, allowed adapters).

Keys come from two places, read together:

- the platform's database (table ``api_keys``, beside the gateway's ledger): ``ragtune keys
  create|list|revoke`` change it while the platform runs;
- an optional YAML keys file (the Helm chart mounts one from a Secret), re-read when it changes.

Only SHA-256 hashes are stored. Keys are 256-bit random tokens, so a fast hash is enough: nobody
can search that space, and password stretching (bcrypt, argon2) would only add its cost to every
request, or force a cache keyed by the plaintext.

Each ``KeyStore`` (one per gateway replica) holds a snapshot of both sources and reads them again
at most every ``refresh_s`` seconds, on the request path: a key created or revoked takes effect on
every replica within that time, and requests in between never touch the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from ragtune.common import database
from ragtune.common.errors import InvalidArgument, NotFound, Unauthenticated
from ragtune.common.validation import check_name

KEY_PREFIX = "rt_"
SHOWN_PREFIX_CHARS = 8  # "rt_" and 5 of the key's ~43 random characters: tells keys apart
DEFAULT_REFRESH_S = 2.0
MAX_DESCRIPTION_CHARS = 256

log = logging.getLogger(__name__)

metadata_obj = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata_obj,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),  # "" for a revoked keys-file entry
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("adapters", sa.Text, nullable=True),  # JSON list; NULL: every adapter
    sa.Column("description", sa.String(MAX_DESCRIPTION_CHARS), nullable=False),
    sa.Column("created_unix_ms", sa.BigInteger, nullable=False),
    sa.Column("revoked_unix_ms", sa.BigInteger, nullable=True),
)


@dataclass(frozen=True)
class Principal:
    tenant: str
    admin: bool = False  # may load and unload adapters
    adapters: frozenset[str] | None = None  # adapters the tenant may use; None: every one

    def may_use(self, adapter: str) -> bool:
        return self.adapters is None or adapter in self.adapters


@dataclass(frozen=True)
class KeyRecord:
    """A key as listings show it: its id and prefix, never the key."""

    key_id: str
    prefix: str  # the key's first characters ("" when unknown: keys-file entries)
    tenant: str
    admin: bool
    adapters: tuple[str, ...] | None
    description: str
    created_unix_ms: int  # 0 when unknown
    revoked_unix_ms: int | None
    source: str  # "database" or "file"
    sha256: str = field(repr=False, default="")

    @property
    def principal(self) -> Principal:
        adapters = None if self.adapters is None else frozenset(self.adapters)
        return Principal(self.tenant, self.admin, adapters)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        del data["sha256"]
        data["adapters"] = None if self.adapters is None else list(self.adapters)
        return data


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_key_fields(tenant: str, adapters: Sequence[str] | None, description: str) -> None:
    if not tenant or not tenant.replace("-", "").replace("_", "").isalnum() or len(tenant) > 64:
        raise InvalidArgument("must be 1-64 letters, digits, '-' or '_'", field="tenant")
    for adapter in adapters or ():
        check_name(adapter, "adapters")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument(
            f"must be at most {MAX_DESCRIPTION_CHARS} characters", field="description"
        )


# -- the keys file ----------------------------------------------------------------------------


def read_keys_file(path: Path) -> list[KeyRecord]:
    """The entries of a YAML keys file (``keys: [{tenant, sha256, admin?, adapters?, ...}]``)."""
    data = yaml.safe_load(path.read_text()) or {}
    records = []
    for i, entry in enumerate(data.get("keys", [])):
        if not entry.get("tenant") or not entry.get("sha256"):
            raise ValueError(f"{path}: keys[{i}] needs 'tenant' and 'sha256'")
        adapters = entry.get("adapters")
        if adapters is not None and not (
            isinstance(adapters, list) and all(isinstance(a, str) for a in adapters)
        ):
            raise ValueError(f"{path}: keys[{i}].adapters must be a list of adapter names")
        digest = str(entry["sha256"]).lower()
        records.append(
            KeyRecord(
                key_id=str(entry.get("id") or f"file-{digest[:12]}"),
                prefix="",
                tenant=str(entry["tenant"]),
                admin=bool(entry.get("admin", False)),
                adapters=None if adapters is None else tuple(adapters),
                description=str(entry.get("description", "")),
                created_unix_ms=int(entry.get("created_unix_ms", 0)),
                revoked_unix_ms=None,
                source="file",
                sha256=digest,
            )
        )
    return records


def create_key(
    path: Path,
    tenant: str,
    *,
    admin: bool = False,
    adapters: list[str] | None = None,
    description: str = "",
) -> str:
    """Append a new key for ``tenant`` to the keys file and return the key (shown once).

    ``adapters``: the adapters requests with this key may use (None: every registered one)."""
    _check_key_fields(tenant, adapters, description)
    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry: dict = {"id": f"key_{secrets.token_hex(6)}", "tenant": tenant, "admin": admin}
    entry["sha256"] = hash_key(key)
    if adapters is not None:
        entry["adapters"] = list(adapters)
    if description:
        entry["description"] = description
    entry["created_unix_ms"] = _now_ms()
    data.setdefault("keys", []).append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return key


# -- the database -----------------------------------------------------------------------------


class KeyDatabase:
    """The ``api_keys`` table (SQLAlchemy Core: SQLite locally, PostgreSQL on a cluster)."""

    def __init__(self, url: str) -> None:
        self.engine = database.connect(url)
        metadata_obj.create_all(self.engine)

    def create(
        self,
        tenant: str,
        *,
        admin: bool = False,
        adapters: Sequence[str] | None = None,
        description: str = "",
    ) -> tuple[str, KeyRecord]:
        """A new key (returned once, never stored) and its record."""
        _check_key_fields(tenant, adapters, description)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = {
            "key_id": f"key_{secrets.token_hex(6)}",
            "sha256": hash_key(key),
            "prefix": key[:SHOWN_PREFIX_CHARS],
            "tenant": tenant,
            "admin": admin,
            "adapters": None if adapters is None else json.dumps(list(adapters)),
            "description": description,
            "created_unix_ms": _now_ms(),
            "revoked_unix_ms": None,
        }
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(**row))
        record = self._record(row)
        log.info("API key %s created for tenant %s (admin=%s)", record.key_id, tenant, admin)
        return key, record

    def records(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""
        query = sa.select(api_keys).order_by(api_keys.c.created_unix_ms, api_keys.c.key_id)
        with self.engine.connect() as conn:
            return [self._record(row._mapping) for row in conn.execute(query)]

    def revoke(self, key_id: str, *, file_records: Iterable[KeyRecord] = ()) -> KeyRecord:
        """Revoke a key of the database or, given the keys file's records, one of the file (a
        revoked row with its hash, which every KeyStore honours over the file)."""
        now = _now_ms()
        where = api_keys.c.key_id == key_id
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(api_keys).where(where)).first()
            match = next((r for r in file_records if r.key_id == key_id), None)
            if row is None and match is not None:  # the same key may be in the table already
                where = api_keys.c.sha256 == match.sha256
                row = conn.execute(sa.select(api_keys).where(where)).first()
            if row is None:
                if match is None:
                    raise NotFound(f"no API key {key_id!r}")
                values = {**match.public(), "sha256": match.sha256, "revoked_unix_ms": now}
                values["adapters"] = None if match.adapters is None else json.dumps(match.adapters)
                del values["source"]
                conn.execute(api_keys.insert().values(**values))
            elif row.revoked_unix_ms is None:
                conn.execute(api_keys.update().where(where).values(revoked_unix_ms=now))
            row = conn.execute(sa.select(api_keys).where(where)).one()
        log.info("API key %s revoked", row.key_id)
        return self._record(row._mapping)

    @staticmethod
    def _record(row: Mapping[str, Any]) -> KeyRecord:
        adapters = row["adapters"]
        return KeyRecord(
            key_id=row["key_id"],
            prefix=row["prefix"],
            tenant=row["tenant"],
            admin=bool(row["admin"]),
            adapters=None if adapters is None else tuple(json.loads(adapters)),
            description=row["description"],
            created_unix_ms=int(row["created_unix_ms"]),
            revoked_unix_ms=row["revoked_unix_ms"],
            source="database",
            sha256=row["sha256"],
        )

    def close(self) -> None:
        self.engine.dispose()


# -- the store the gateway asks -----------------------------------------------------------------


class KeyStore:
    """Maps ``authorization: Bearer <key>`` metadata to a principal.

    ``hashed``: fixed keys (sha256 hex -> principal); ``database`` and ``keys_file``: sources read
    again every ``refresh_s`` seconds. A revoked database row wins over the same key in the file.
    A failed refresh keeps the last snapshot (and says so in the log); a failed first read raises.
    """

    def __init__(
        self,
        hashed: Mapping[str, Principal] | None = None,
        *,
        database: KeyDatabase | None = None,
        keys_file: Path | None = None,
        refresh_s: float = DEFAULT_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if refresh_s < 0:
            raise ValueError("refresh_s must be >= 0")
        self._static = dict(hashed or {})
        self._database, self._keys_file = database, keys_file
        self._refresh_s, self._clock = refresh_s, clock
        self._file: tuple[tuple[int, int, int] | None, list[KeyRecord]] = (None, [])
        self._principals = dict(self._static)  # sha256 hex -> principal
        self._lock = threading.Lock()
        self._next_refresh = float("inf")
        if database is not None or keys_file is not None:
            self._refresh(strict=True)

    @classmethod
    def load(cls, path: Path, *, refresh_s: float = DEFAULT_REFRESH_S) -> KeyStore:
        """The keys of one keys file (which must exist)."""
        if not path.exists():
            raise FileNotFoundError(
                f"keys file {path} does not exist (create one: ragtune keys create --keys-file)"
            )
        return cls(keys_file=path, refresh_s=refresh_s)

    @classmethod
    def open(
        cls,
        database_url: str,
        *,
        keys_file: Path | str | None = None,
        refresh_s: float = DEFAULT_REFRESH_S,
    ) -> KeyStore:
        """The keys of the database at ``database_url`` plus those of ``keys_file`` (if given;
        a missing file holds no keys)."""
        path = Path(keys_file) if keys_file else None
        return cls(database=KeyDatabase(database_url), keys_file=path, refresh_s=refresh_s)

    def principal_for(self, metadata: Mapping[str, str]) -> Principal:
        header = metadata.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise Unauthenticated("missing 'authorization: Bearer <api key>' metadata")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <api key>'")
        self._maybe_refresh()
        # A dict lookup by hash: its timing can only tell about the hash, which does not help
        # anyone find a key.
        principal = self._principals.get(hash_key(key.strip()))
        if principal is None:
            raise Unauthenticated("unknown API key")
        return principal

    def close(self) -> None:
        if self._database is not None:
            self._database.close()

    # -- refresh ----------------------------------------------------------------------------------

    def _maybe_refresh(self) -> None:
        if self._clock() < self._next_refresh:
            return
        if not self._lock.acquire(blocking=False):
            return  # another thread is reading: this request uses the current snapshot
        try:
            self._refresh(strict=False)
        finally:
            self._lock.release()

    def _refresh(self, *, strict: bool) -> None:
        self._next_refresh = self._clock() + self._refresh_s
        try:
            file_records = self._read_file()
            db_records = self._database.records() if self._database is not None else []
        except (OSError, ValueError, yaml.YAMLError, sa.exc.SQLAlchemyError) as exc:
            if strict:
                raise
            log.warning(
                "API keys not refreshed (%s); the %d keys read before stay in use",
                type(exc).__name__,
                len(self._principals),
            )
            return
        principals = dict(self._static)
        principals.update((r.sha256, r.principal) for r in file_records)
        for record in db_records:
            if record.revoked_unix_ms is None:
                principals[record.sha256] = record.principal
            else:
                principals.pop(record.sha256, None)
        if principals.keys() != self._principals.keys():
            log.info(
                "API keys: %d in use (%d in the keys file, %d database rows)",
                len(principals),
                len(file_records),
                len(db_records),
            )
        self._principals = principals

    def _read_file(self) -> list[KeyRecord]:
        """The keys file's records, read again only when it changed (Kubernetes updates a
        mounted Secret by swapping a symlink: stat follows it)."""
        if self._keys_file is None:
            return []
        try:
            st = self._keys_file.stat()
        except FileNotFoundError:
            self._file = (None, [])
            return []
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature != self._file[0]:
            self._file = (signature, read_keys_file(self._keys_file))
        return self._file[1]
