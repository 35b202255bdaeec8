"""API keys → tenants. Keys are stored only as SHA-256 hashes in a YAML keys file.

Keys are random 32-byte tokens, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ragtune.common.errors import InvalidArgument, Unauthenticated

KEY_PREFIX = "rt_"


@dataclass(frozen=True)
class Principal:
    tenant: str
    admin: bool = False  # may load and unload adapters
    adapters: frozenset[str] | None = None  # adapters the tenant may use; None: every one

    def may_use(self, adapter: str) -> bool:
        return self.adapters is None or adapter in self.adapters


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Maps ``authorization: Bearer <key>`` metadata to a tenant name."""

    def __init__(self, hashed: Mapping[str, Principal]) -> None:
        self._principals = dict(hashed)  # sha256 hex -> principal

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        if not path.exists():
            raise FileNotFoundError(
                f"keys file {path} does not exist (create one: ragtune keys create)"
            )
        data = yaml.safe_load(path.read_text()) or {}
        hashed = {}
        for i, entry in enumerate(data.get("keys", [])):
            if not entry.get("tenant") or not entry.get("sha256"):
                raise ValueError(f"{path}: keys[{i}] needs 'tenant' and 'sha256'")
            adapters = entry.get("adapters")
            if adapters is not None and not (
                isinstance(adapters, list) and all(isinstance(a, str) for a in adapters)
            ):
                raise ValueError(f"{path}: keys[{i}].adapters must be a list of adapter names")
            hashed[str(entry["sha256"]).lower()] = Principal(
                str(entry["tenant"]),
                bool(entry.get("admin", False)),
                None if adapters is None else frozenset(adapters),
            )
        return cls(hashed)

    def principal_for(self, metadata: Mapping[str, str]) -> Principal:
        header = metadata.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise Unauthenticated("missing 'authorization: Bearer <api key>' metadata")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <api key>'")
        digest = hash_key(key.strip())
        for known, principal in self._principals.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Unauthenticated("unknown API key")


def create_key(
    path: Path, tenant: str, *, admin: bool = False, adapters: list[str] | None = None
) -> str:
    """Append a new key for ``tenant`` to the keys file and return the key (shown once).

    ``adapters``: the adapters requests with this key may use (None: every registered one)."""
    if not tenant or not tenant.replace("-", "").replace("_", "").isalnum():
        raise InvalidArgument("tenant must be letters, digits, '-' or '_'", field="tenant")
    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry: dict = {"tenant": tenant, "admin": admin, "sha256": hash_key(key)}
    if adapters is not None:
        entry["adapters"] = list(adapters)
    data.setdefault("keys", []).append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return key
