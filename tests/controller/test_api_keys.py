"""``/api/api-keys``: shown once, stored hashed, scoped to their owner."""

from __future__ import annotations

import hashlib
import re

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from controller import appkeys
from controller.store import ApiKey, Database
from tests.conftest import Controller
from tests.controller.test_auth import make_user
from tests.controller.test_deployments import MISSING
from tests.controller.test_limits import LIMIT_FIELDS


async def test_create_list_delete(controller: Controller) -> None:
    status, created = await controller.admin("POST", "/api/api-keys", json={"name": "my-api-key"})
    assert status == 201
    assert set(created) >= {"id", "name", "key"}
    key = created["key"]
    # lmsk_ + at least 128 bits (token_urlsafe(32) gives 43 characters).
    assert re.fullmatch(r"lmsk_[A-Za-z0-9_-]{43}", key)

    status, listing = await controller.admin("GET", "/api/api-keys")
    assert status == 200
    [item] = listing["items"]
    assert set(item) == {
        "id", "name", "prefix", "hint", "user_id", "allowed_deployments", "limits", "budget",
        "created_at", "last_used",
    }  # fmt: skip
    assert item["allowed_deployments"] is None
    assert item["limits"] == dict.fromkeys(LIMIT_FIELDS) and item["budget"] is None
    assert item["prefix"] == "lmsk_" and item["name"] == "my-api-key"
    assert item["hint"].endswith(key[-4:]) and key not in str(listing)
    assert item["last_used"] is None

    status, _ = await controller.admin("DELETE", f"/api/api-keys/{created['id']}")
    assert status == 204
    status, _ = await controller.call("GET", "/api/auth/me", token=key)
    assert status == 401
    status, listing = await controller.admin("GET", "/api/api-keys")
    assert listing["items"] == []


async def test_only_a_hash_is_stored(controller: Controller) -> None:
    _, created = await controller.admin("POST", "/api/api-keys", json={"name": "k"})
    async with controller.app[appkeys.DATABASE].session() as session:
        row = (await session.scalars(select(ApiKey))).one()
    assert row.key_hash == hashlib.sha256(created["key"].encode()).hexdigest()
    if controller.database_url:
        # PostgreSQL: the whole stored row, as text.
        async with controller.app[appkeys.DATABASE].session() as session:
            stored = await session.scalar(text("SELECT CAST(api_keys AS text) FROM api_keys"))
        assert isinstance(stored, str) and row.key_hash in stored
        assert created["key"] not in stored
        return
    db_bytes = (controller.data_dir / "lmstack.db").read_bytes()
    wal = controller.data_dir / "lmstack.db-wal"
    if wal.exists():
        db_bytes += wal.read_bytes()
    assert created["key"].encode() not in db_bytes


async def test_last_used_is_recorded_and_flushed(controller: Controller) -> None:
    _, created = await controller.admin("POST", "/api/api-keys", json={"name": "k"})
    status, _ = await controller.call("GET", "/api/deployments", token=created["key"])
    assert status == 200
    _, listing = await controller.admin("GET", "/api/api-keys")
    assert listing["items"][0]["last_used"] is not None
    # Buffered, not yet written; a flush (periodic or at shutdown) persists it.
    await controller.app[appkeys.AUTH].flush_last_used()
    async with controller.app[appkeys.DATABASE].session() as session:
        row = (await session.scalars(select(ApiKey))).one()
    assert row.last_used is not None


async def _rename_table(db: Database, old: str, new: str) -> None:
    async with db.session() as session:
        await session.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
        await session.commit()


async def test_last_used_survives_a_failed_write(controller: Controller) -> None:
    """A flush the database refuses keeps its batch, and the next flush writes it."""
    _, created = await controller.admin("POST", "/api/api-keys", json={"name": "k"})
    status, _ = await controller.call("GET", "/api/deployments", token=created["key"])
    assert status == 200
    auth, db = controller.app[appkeys.AUTH], controller.app[appkeys.DATABASE]
    used = auth.pending_last_used(created["id"])
    assert used is not None
    # With its table gone the write fails in the database, as a lost one would.
    await _rename_table(db, "api_keys", "api_keys_away")
    with pytest.raises(SQLAlchemyError):
        await auth.flush_last_used()
    await _rename_table(db, "api_keys_away", "api_keys")
    assert auth.pending_last_used(created["id"]) == used
    await auth.flush_last_used()
    assert auth.pending_last_used(created["id"]) is None
    async with db.session() as session:
        row = await session.get(ApiKey, created["id"])
    assert row is not None and row.last_used == used


async def test_keys_are_scoped_to_their_owner(controller: Controller) -> None:
    alice = await make_user(controller, "alice")
    bob = await make_user(controller, "bob")
    _, alice_key = await controller.call("POST", "/api/api-keys", token=alice, json={"name": "a"})
    _, bob_key = await controller.call("POST", "/api/api-keys", token=bob, json={"name": "b"})

    _, alice_list = await controller.call("GET", "/api/api-keys", token=alice)
    assert [k["id"] for k in alice_list["items"]] == [alice_key["id"]]
    _, admin_list = await controller.admin("GET", "/api/api-keys")
    assert {k["id"] for k in admin_list["items"]} == {alice_key["id"], bob_key["id"]}

    status, _ = await controller.call("DELETE", f"/api/api-keys/{bob_key['id']}", token=alice)
    assert status == 404
    status, _ = await controller.call("GET", "/api/auth/me", token=bob_key["key"])
    assert status == 200
    status, _ = await controller.admin("DELETE", f"/api/api-keys/{bob_key['id']}")
    assert status == 204


async def test_bad_input(controller: Controller) -> None:
    await controller.admin("POST", "/api/api-keys", json={"name": "same"})
    status, body = await controller.admin("POST", "/api/api-keys", json={"name": "same"})
    assert status == 409 and "same" in body["detail"]
    for payload in ({}, {"name": ""}, {"name": 3}, {"name": "x", "extra": 1}):
        status, body = await controller.admin("POST", "/api/api-keys", json=payload)
        assert status == 422, payload
    for key_id in (MISSING, "nope"):
        status, _ = await controller.admin("DELETE", f"/api/api-keys/{key_id}")
        assert status == 404
