"""API keys in the database: created, listed and revoked while gateways run, seen by every
replica within the refresh interval, never stored or logged in plain text."""

from __future__ import annotations

import json
import logging
import time

import grpc
import pytest

from ragtune import cli
from ragtune.common.auth import KeyDatabase, KeyStore, create_key
from ragtune.common.errors import InvalidArgument, NotFound, Unauthenticated, to_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def accepted(store: KeyStore, key: str) -> bool:
    try:
        store.principal_for(bearer(key))
    except Unauthenticated:
        return False
    return True


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def db(url):
    keys = KeyDatabase(url)
    yield keys
    keys.close()


def store_over(url, clock, **kwargs) -> KeyStore:
    return KeyStore(database=KeyDatabase(url), refresh_s=2.0, clock=clock, **kwargs)


def test_a_key_created_while_a_store_runs_is_accepted_after_one_refresh_interval(database_url):
    url, db = database_url, KeyDatabase(database_url)
    clock = Clock()
    store = store_over(url, clock)
    key, record = db.create("acme", adapters=["pirate"], description="billing team")
    assert not accepted(store, key)  # the snapshot is reused: no database read per request
    clock.now += 2.0
    principal = store.principal_for(bearer(key))
    assert principal.tenant == "acme" and not principal.admin
    assert principal.may_use("pirate") and not principal.may_use("tldr")
    assert record.prefix == key[: len(record.prefix)] and len(record.prefix) == 8


def test_a_revoked_key_is_refused_with_unauthenticated_after_one_interval(database_url):
    url, db = database_url, KeyDatabase(database_url)
    clock = Clock()
    key, record = db.create("acme", admin=True)
    store = store_over(url, clock)
    assert store.principal_for(bearer(key)).admin
    db.revoke(record.key_id)
    clock.now += 2.0
    with pytest.raises(Unauthenticated) as err:
        store.principal_for(bearer(key))
    assert to_status(err.value) == (grpc.StatusCode.UNAUTHENTICATED, "unknown API key")
    assert db.revoke(record.key_id).revoked_unix_ms == db.records()[0].revoked_unix_ms  # idempotent
    with pytest.raises(NotFound):
        db.revoke("key_nope")


def test_changes_reach_a_live_store_in_real_time(url, db):
    store = KeyStore(database=KeyDatabase(url), refresh_s=0.05)
    key, record = db.create("acme")
    deadline = time.monotonic() + 10
    while not accepted(store, key) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert accepted(store, key)
    db.revoke(record.key_id)
    while accepted(store, key) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not accepted(store, key)


def test_two_replicas_over_one_database_agree(database_url):
    """On SQLite and PostgreSQL: every gateway replica sees the same keys."""
    url, db = database_url, KeyDatabase(database_url)
    clock = Clock()
    first, second = store_over(url, clock), store_over(url, clock)
    keys = {tenant: db.create(tenant) for tenant in ("acme", "globex")}
    clock.now += 2.0
    for tenant, (key, _) in keys.items():
        assert first.principal_for(bearer(key)) == second.principal_for(bearer(key))
        assert first.principal_for(bearer(key)).tenant == tenant
    db.revoke(keys["acme"][1].key_id)
    clock.now += 2.0
    assert [accepted(s, keys["acme"][0]) for s in (first, second)] == [False, False]
    assert [accepted(s, keys["globex"][0]) for s in (first, second)] == [True, True]


def test_keys_file_and_database_keys_work_together_and_file_keys_can_be_revoked(
    tmp_path, url, db, capsys
):
    keys_file = tmp_path / "keys.yaml"
    from_file = create_key(keys_file, "initech", description="from the Secret")
    clock = Clock()
    store = store_over(url, clock, keys_file=keys_file)
    from_db, _ = db.create("acme")
    clock.now += 2.0
    assert store.principal_for(bearer(from_file)).tenant == "initech"
    assert store.principal_for(bearer(from_db)).tenant == "acme"

    later = create_key(keys_file, "hooli")  # the kubelet updates the mounted Secret
    clock.now += 2.0
    assert store.principal_for(bearer(later)).tenant == "hooli"

    argv = ["--data-dir", str(tmp_path), "keys", "list", "--json"]
    assert cli.main(argv) == 0
    listed = {r["tenant"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["initech"]["source"] == "file" and listed["acme"]["source"] == "database"
    revoke = ["--data-dir", str(tmp_path), "keys", "revoke", listed["initech"]["key_id"]]
    assert cli.main(revoke) == 0
    assert "revoked API key" in capsys.readouterr().out
    clock.now += 2.0
    assert not accepted(store, from_file)  # a revoked row wins over the file
    assert accepted(store, later)
    assert cli.main(argv) == 0
    assert "initech" not in {r["tenant"] for r in json.loads(capsys.readouterr().out)}


def test_list_shows_ids_and_prefixes_never_the_key(tmp_path, capsys):
    data = ["--data-dir", str(tmp_path), "keys"]
    assert cli.main([*data, "create", "--tenant", "acme", "--admin", "--description", "ops"]) == 0
    key = capsys.readouterr().out.strip()
    assert cli.main([*data, "create", "--tenant", "globex", "--adapters", "pirate,tldr"]) == 0
    other = capsys.readouterr().out.strip()

    assert cli.main([*data, "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert key not in out and other not in out
    rows = {r["tenant"]: r for r in json.loads(out)}
    assert set(rows["acme"]) == {
        "key_id", "prefix", "tenant", "admin", "adapters", "description", "created_unix_ms",
        "revoked_unix_ms", "source",
    }  # fmt: skip
    assert rows["acme"]["admin"] and rows["acme"]["adapters"] is None
    assert rows["acme"]["description"] == "ops" and rows["acme"]["created_unix_ms"] > 0
    assert rows["globex"]["adapters"] == ["pirate", "tldr"] and not rows["globex"]["admin"]
    assert key.startswith(rows["acme"]["prefix"])

    assert cli.main([*data, "revoke", rows["acme"]["key_id"]]) == 0
    capsys.readouterr()
    assert cli.main([*data, "list"]) == 0
    table = capsys.readouterr().out
    assert "globex" in table and "acme" not in table and other not in table
    assert cli.main([*data, "list", "--all"]) == 0
    assert "acme" in capsys.readouterr().out
    assert cli.main([*data, "revoke", "key_unknown"]) == 2
    assert "no API key 'key_unknown'" in capsys.readouterr().err


def test_dev_key_is_reused_while_valid_and_replaced_once_revoked(tmp_path, capsys):
    data = ["--data-dir", str(tmp_path), "keys"]
    assert cli.main([*data, "create", "--tenant", "dev", "--dev"]) == 0
    key = capsys.readouterr().out.strip()
    assert (tmp_path / "dev-api-key").read_text().strip() == key
    assert cli.main([*data, "create", "--tenant", "dev", "--dev"]) == 0
    assert capsys.readouterr().out.strip() == key
    store = KeyStore.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert store.principal_for(bearer(key)).admin

    (row,) = KeyDatabase(f"sqlite:///{tmp_path / 'ledger.db'}").records()
    assert cli.main([*data, "revoke", row.key_id]) == 0
    assert cli.main([*data, "create", "--tenant", "dev", "--dev"]) == 0
    fresh = capsys.readouterr().out.strip().splitlines()[-1]
    assert fresh != key and (tmp_path / "dev-api-key").read_text().strip() == fresh


def test_keys_never_reach_the_database_or_the_log_in_plain_text(tmp_path, url, caplog):
    caplog.set_level(logging.DEBUG)
    db = KeyDatabase(url)
    key, record = db.create("acme", admin=True)
    store = KeyStore(database=KeyDatabase(url), refresh_s=0)
    assert store.principal_for(bearer(key)).tenant == "acme"
    with pytest.raises(Unauthenticated) as err:
        store.principal_for(bearer(key + "x"))
    assert key not in str(err.value)
    db.revoke(record.key_id)
    assert not accepted(store, key)
    store.close()
    db.close()

    assert caplog.records  # created, revoked, the store's changes
    for entry in caplog.records:
        assert key not in entry.getMessage() and key[8:] not in entry.getMessage()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    assert key.encode() not in stored and key[8:].encode() not in stored


def test_a_failed_refresh_keeps_the_last_keys(url, db, monkeypatch, caplog):
    import sqlalchemy as sa

    clock = Clock()
    key, _ = db.create("acme")
    store = store_over(url, clock)

    def down():
        raise sa.exc.OperationalError("SELECT", {}, Exception("database is gone"))

    monkeypatch.setattr(store._database, "records", down)
    clock.now += 2.0
    assert store.principal_for(bearer(key)).tenant == "acme"
    assert "API keys not refreshed (OperationalError)" in caplog.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tenant": "no spaces"}, "tenant"),
        ({"tenant": "acme", "adapters": ["../x"]}, "adapters"),
        ({"tenant": "acme", "description": "x" * 300}, "description"),
    ],
)
def test_bad_key_fields_are_refused_naming_the_field(db, fields, field):
    tenant = fields.pop("tenant")
    with pytest.raises(InvalidArgument) as err:
        db.create(tenant, **fields)
    assert err.value.field == field


def test_the_gateway_accepts_a_key_created_while_it_runs_and_refuses_it_once_revoked(
    tmp_path, capsys
):
    """The issue's case: `ragtune keys create` against a running gateway's database, and no
    restart (the gateway's own KeyStore, built from its config: database plus keys file)."""
    from ragtune.common.context import CallContext
    from ragtune.gateway.config import GatewayConfig
    from ragtune.gateway.service import GatewayService
    from ragtune.v1 import gateway_pb2
    from tests.conftest import run

    from_file = create_key(tmp_path / "keys.yaml", "initech")
    config = GatewayConfig(
        keys_file=str(tmp_path / "keys.yaml"), database_url=f"sqlite:///{tmp_path / 'ledger.db'}"
    )
    gateway = GatewayService(config, embedding=None, retrieval=None, generation=None)

    def tenant(key: str) -> str | None:
        try:
            usage = run(gateway.Usage(gateway_pb2.UsageRequest(), CallContext(bearer(key))))
        except Unauthenticated:
            return None
        return usage.tenant

    def settles(check) -> bool:  # the gateway reads the keys every 2 s: allow for a slow machine
        deadline = time.monotonic() + 15
        while not check() and time.monotonic() < deadline:
            time.sleep(0.1)
        return check()

    assert tenant(from_file) == "initech"
    data = ["--data-dir", str(tmp_path), "keys"]
    assert cli.main([*data, "create", "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.strip()
    assert settles(lambda: tenant(key) == "acme")
    (record,) = KeyDatabase(config.database_url).records()
    assert cli.main([*data, "revoke", record.key_id]) == 0
    assert settles(lambda: tenant(key) is None)
    assert tenant(from_file) == "initech"
    run(gateway.shutdown())
