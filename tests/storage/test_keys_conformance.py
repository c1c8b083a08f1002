"""Conformance: the key store (A3), every backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.errors import AlreadyExists
from storage.keys import KeysDestroyed, KeyStore, owner_kind
from storage.sqlite import open_sqlite_stores
from storage.stores import Stores

NOW = 1_000_000
LIMIT = 10


async def add(keys: KeyStore, owner: str, key_id: int, *, master: str = "m1", reserved: int = 2):
    return await keys.add_key(
        owner,
        key_id=key_id,
        wrapped=f"wrapped-{owner}-{key_id}".encode(),
        master_id=master,
        reserved=reserved,
        now=NOW + key_id,
    )


async def test_a3_a_new_owner_has_no_keys(stores: Stores) -> None:
    found = await stores.keys.load("user:1")
    assert (found.owner, found.keys, found.destroyed_at) == ("user:1", (), None)
    assert await stores.keys.master_ids() == {}


async def test_a3_keys_are_added_in_turn(stores: Stores) -> None:
    first = await add(stores.keys, "user:1", 1)
    assert (first.key_id, first.reserved, first.created_at) == (1, 2, NOW + 1)
    with pytest.raises(AlreadyExists):
        await add(stores.keys, "user:1", 1)  # taken
    with pytest.raises(AlreadyExists):
        await add(stores.keys, "user:1", 3)  # out of turn
    await add(stores.keys, "user:1", 2)
    await add(stores.keys, "org:1", 1)  # another owner, another database
    loaded = await stores.keys.load("user:1")
    assert [k.key_id for k in loaded.keys] == [1, 2]
    assert loaded.keys[0].wrapped == b"wrapped-user:1-1"
    assert [k.key_id for k in (await stores.keys.load("org:1")).keys] == [1]
    assert await stores.keys.master_ids() == {"m1": 3}


async def test_a3_reservations_give_leases_up_to_the_limit_on_the_newest_key_only(
    stores: Stores,
) -> None:
    await add(stores.keys, "user:1", 1, reserved=2)
    assert await stores.keys.reserve("user:1", 1, count=4, limit=LIMIT) == (2, 6)
    assert await stores.keys.reserve("user:1", 1, count=4, limit=LIMIT) == (6, 10)
    assert await stores.keys.reserve("user:1", 1, count=4, limit=LIMIT) is None  # used up
    await add(stores.keys, "user:1", 2, reserved=0)
    assert await stores.keys.reserve("user:1", 1, count=1, limit=100) is None  # not newest
    assert await stores.keys.reserve("user:1", 2, count=3, limit=LIMIT) == (0, 3)
    assert await stores.keys.reserve("user:1", 9, count=3, limit=LIMIT) is None  # missing
    assert await stores.keys.reserve("user:2", 1, count=3, limit=LIMIT) is None
    loaded = await stores.keys.load("user:1")
    assert [k.reserved for k in loaded.keys] == [10, 3]


async def test_a3_destroying_an_owners_keys_is_final(stores: Stores) -> None:
    await add(stores.keys, "user:1", 1)
    await add(stores.keys, "user:1", 2)
    await add(stores.keys, "user:2", 1)
    assert await stores.keys.destroy("user:1", now=NOW + 50) == 2
    assert await stores.keys.destroy("user:1", now=NOW + 60) == 0  # idempotent
    gone = await stores.keys.load("user:1")
    assert (gone.keys, gone.destroyed_at) == ((), NOW + 50)
    with pytest.raises(KeysDestroyed):
        await add(stores.keys, "user:1", 1)
    assert await stores.keys.reserve("user:1", 2, count=1, limit=LIMIT) is None
    assert [k.key_id for k in (await stores.keys.load("user:2")).keys] == [1]
    # An owner that never had keys can be destroyed too (an account that never wrote).
    assert await stores.keys.destroy("org:9", now=NOW) == 0
    assert (await stores.keys.load("org:9")).destroyed_at == NOW
    assert await stores.keys.master_ids() == {"m1": 1}


async def test_a3_scan_pages_through_owners_of_one_kind(stores: Stores) -> None:
    for user in (1, 2, 3, 10):
        await add(stores.keys, f"user:{user}", 1)
    await add(stores.keys, "org:1", 1)
    await stores.keys.destroy("user:3", now=NOW)
    first = await stores.keys.scan("user", after="", limit=2)
    assert [o.owner for o in first] == ["user:1", "user:10"]
    rest = await stores.keys.scan("user", after=first[-1].owner, limit=10)
    assert [(o.owner, o.destroyed_at) for o in rest] == [
        ("user:2", None),
        ("user:3", NOW),
    ]
    assert [o.owner for o in await stores.keys.scan("org", after="", limit=10)] == ["org:1"]


async def test_a3_rewrap_is_a_compare_and_set_on_the_master_id(stores: Stores) -> None:
    await add(stores.keys, "user:1", 1, master="old")
    await add(stores.keys, "org:1", 1, master="old")
    assert await stores.keys.rewrap(
        "user:1", 1, expect_master="old", wrapped=b"new-wrapped", master_id="new"
    )
    assert not await stores.keys.rewrap(
        "user:1", 1, expect_master="old", wrapped=b"again", master_id="new"
    )
    assert not await stores.keys.rewrap(
        "user:1", 2, expect_master="old", wrapped=b"x", master_id="new"
    )
    key = (await stores.keys.load("user:1")).keys[0]
    assert (key.wrapped, key.master_id) == (b"new-wrapped", "new")
    assert await stores.keys.master_ids() == {"new": 1, "old": 1}


async def test_a3_owner_names_are_checked(stores: Stores) -> None:
    for bad in ("user", "user:", "user:01", "platform:1", "user:1:2", "org:-1"):
        with pytest.raises(ValueError):
            owner_kind(bad)
        with pytest.raises(ValueError):
            await stores.keys.load(bad)
    assert owner_kind("org:12") == "org" and owner_kind("user:0") == "user"


async def test_a3_sqlite_keeps_each_owners_keys_in_its_own_domain_database(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with open_sqlite_stores(data) as stores:
        await add(stores.keys, "user:1", 1)
        await add(stores.keys, "org:1", 1)
    personal = sqlite3.connect(data / "personal.db")
    orgs = sqlite3.connect(data / "organisations.db")
    try:
        assert personal.execute("SELECT owner FROM data_keys").fetchall() == [("user:1",)]
        assert orgs.execute("SELECT owner FROM data_keys").fetchall() == [("org:1",)]
    finally:
        personal.close()
        orgs.close()


async def test_a3_sqlite_destroy_leaves_no_copy_of_the_wrapped_key_in_the_files(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    marker = b"WRAPPED-KEY-BYTES-" * 3
    async with open_sqlite_stores(data) as stores:
        await stores.keys.add_key(
            "user:1", key_id=1, wrapped=marker, master_id="m", reserved=0, now=NOW
        )
        for _ in range(3):  # rewrite the page a few times, as reservations do
            await stores.keys.reserve("user:1", 1, count=1, limit=LIMIT)
        assert any(marker in path.read_bytes() for path in data.glob("personal.db*"))
        await stores.keys.destroy("user:1", now=NOW)
        for path in data.glob("personal.db*"):
            assert marker not in path.read_bytes(), path.name
    for path in data.glob("personal.db*"):
        assert marker not in path.read_bytes(), path.name
