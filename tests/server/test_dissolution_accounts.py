"""O4 with P5: dissolving an organisation ends its enterprise accounts, through the account
deletion path (A1), idempotently and resumably; every store backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from protocol.errors import CloseCode
from protocol.ids import direct_conversation_id
from protocol.requests import Content
from server.account_deletion import AccountEraser
from server.clock import ManualClock
from server.dissolution import Dissolver, enterprise_account_ender
from server.encryption import org_keys_destroyer
from server.enterprise import EnterpriseIndex
from storage.crypto import MasterKey
from storage.enterprise import EnterpriseAccount, placeholder_phone
from storage.keys import org_owner, user_owner
from storage.memory import open_memory_stores
from storage.orgs import NewCopy
from storage.records import Entry, NewConversation, NewEntry, RefreshSession
from storage.sealing import seal_stores
from storage.sqlite import open_sqlite_stores
from storage.stores import Stores


@pytest.fixture(params=["memory", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "memory":
        async with open_memory_stores() as opened:
            yield seal_stores(opened, MasterKey.generate())
    else:
        async with open_sqlite_stores(tmp_path / "data") as opened:
            yield seal_stores(opened, MasterKey.generate())


@dataclass
class Scene:
    org: int
    keep: int
    admin: int
    friend: int
    #: Enterprise account name -> user id; "cat" is cancelled before the dissolution.
    accounts: dict[str, int]
    outsider_account: int
    chat: str
    closed: list[tuple[int, int, str]] = field(default_factory=list)


async def _scene(stores: Stores, clock: ManualClock) -> Scene:
    now = clock.now_ms()
    admin = await stores.personal.create_user(phone="+15550001", display_name="a", now=now)
    friend = await stores.personal.create_user(phone="+15550002", display_name="f", now=now)
    org = await stores.orgs.create_org(name="Acme", disclosure="d", creator=admin.user_id, now=now)
    keep = await stores.orgs.create_org(
        name="Kept", disclosure="d", creator=friend.user_id, now=now
    )
    await stores.orgs.add_member(org.org_id, friend.user_id, role="member", disclosure="d", now=now)

    async def enterprise(org_id: int, name: str) -> int:
        user = await stores.personal.create_user(
            phone=placeholder_phone(org_id, name), display_name=name, now=now
        )
        await stores.orgs.create_account(
            org_id, account=name, user_id=user.user_id, password_hash="h", now=now
        )
        await stores.orgs.add_member(org_id, user.user_id, role="member", disclosure="d", now=now)
        device = await stores.personal.register_device(user_id=user.user_id, name="p", now=now)
        await stores.personal.put_refresh_session(
            RefreshSession(
                session_id=f"s-{org_id}-{name}",
                user_id=user.user_id,
                device_id=device.device_id,
                secret_mac=b"m" * 32,
                generation=0,
                expires_at=now + 10**9,
            )
        )
        return user.user_id

    accounts = {name: await enterprise(org.org_id, name) for name in ("ann", "ben", "cat")}
    await stores.orgs.set_account_status(org.org_id, accounts["cat"], status="cancelled")
    outsider_account = await enterprise(keep.org_id, "kim")
    # A cross-domain single chat between an enterprise account and a personal user (D3).
    chat = direct_conversation_id(accounts["ann"], friend.user_id)
    for i, (sender, text) in enumerate(
        ((accounts["ann"], "from ann"), (friend.user_id, "from friend"))
    ):
        await stores.cross.append(
            NewEntry(
                conv_id=chat,
                kind="message",
                sender=sender,
                ts=now,
                body=msgspec.msgpack.encode(Content(text=text)),
                cmid=f"c{i}",
                create=NewConversation(
                    conv_id=chat,
                    kind="direct",
                    title="",
                    owner_id=None,
                    member_limit=2,
                    members=((accounts["ann"], "member"), (friend.user_id, "member")),
                ),
            )
        )
    for i in range(5):
        await stores.orgs.add_copy(
            org.org_id,
            NewCopy(member=accounts["ann"], conv_ref="r", ts=now, body=b"x", source=f"s{i}"),
        )
    await stores.orgs.mark_dissolving(org.org_id, now=now)
    return Scene(
        org=org.org_id,
        keep=keep.org_id,
        admin=admin.user_id,
        friend=friend.user_id,
        accounts=accounts,
        outsider_account=outsider_account,
        chat=chat,
    )


def _jobs(
    stores: Stores, clock: ManualClock, scene: Scene, *, fail_after: int | None = None
) -> tuple[Dissolver, AccountEraser]:
    """One process's dissolution and erasure jobs; with ``fail_after`` the process dies
    after ending that many enterprise accounts."""

    async def publish(entry: Entry) -> None:
        return None

    def disconnect(user_id: int, code: int, reason: str) -> None:
        scene.closed.append((user_id, code, reason))

    eraser = AccountEraser(stores, clock, publish_recall=publish, disconnect=disconnect)
    end = enterprise_account_ender(eraser, EnterpriseIndex(stores.orgs))
    ended = 0

    async def end_or_die(account: EnterpriseAccount) -> None:
        nonlocal ended
        if fail_after is not None and ended >= fail_after:
            raise RuntimeError("the process died")
        await end(account)
        ended += 1

    dissolver = Dissolver(
        stores.orgs,
        on_dissolved=org_keys_destroyer(stores.keys, clock),
        end_account=end_or_die,
        chunk=2,
    )
    return dissolver, eraser


async def _assert_dissolved(stores: Stores, scene: Scene) -> None:
    assert await stores.orgs.get_org(scene.org) is None
    assert await stores.orgs.dissolving() == []
    assert await stores.orgs.list_accounts(scene.org, limit=10) == []
    assert (await stores.keys.load(org_owner(scene.org))).keys == ()
    for name, user_id in scene.accounts.items():
        user = await stores.personal.get_user(user_id)
        # The A1 tombstone: the id stays (conversations name it), the person is gone.
        assert user is not None and user.deleted, name
        assert user.token_generation >= 1  # every access token issued before is refused
        assert (user.phone, user.display_name) == (f"deleted:{user_id}", "")
        assert await stores.personal.get_user_by_phone(placeholder_phone(scene.org, name)) is None
        assert await stores.personal.get_refresh_session(f"s-{scene.org}-{name}") is None
        assert await stores.personal.list_devices(user_id) == []
        assert await stores.orgs.account_of_user(user_id) is None
        assert (await stores.keys.load(user_owner(user_id))).keys == ()
    assert await stores.personal.pending_deletions() == []
    # Nobody else was touched: the personal member, the other organisation and its account.
    friend = await stores.personal.get_user(scene.friend)
    assert friend is not None and not friend.deleted
    assert await stores.orgs.get_org(scene.keep) is not None
    kim = await stores.personal.get_user(scene.outsider_account)
    assert kim is not None and not kim.deleted
    assert await stores.orgs.account_of_user(scene.outsider_account) is not None
    # D3: the cross-domain conversation stays with its participants; the enterprise
    # account's own message is tombstoned (seq kept), the friend's is untouched.
    assert await stores.cross.get_conversation(scene.chat) is not None
    first, second = await stores.cross.history(
        scene.chat, visible_from=1, visible_to=None, before_seq=None, limit=10
    )
    assert (first.seq, first.recalled, first.body) == (1, True, None)
    assert second.seq == 2 and not second.recalled
    assert msgspec.msgpack.decode(second.body or b"", type=Content).text == "from friend"


async def test_o4_p5_dissolution_ends_the_orgs_enterprise_accounts(stores: Stores) -> None:
    clock = ManualClock()
    scene = await _scene(stores, clock)
    dissolver, eraser = _jobs(stores, clock, scene)
    await dissolver.finish_all()
    # Sessions end at once (before any erasure): 4004 to every live connection.
    assert sorted(scene.closed) == sorted(
        (u, CloseCode.SESSION_REVOKED, "organisation dissolved") for u in scene.accounts.values()
    )
    assert sorted(await stores.personal.pending_deletions()) == sorted(scene.accounts.values())
    await eraser.finish_all()
    await _assert_dissolved(stores, scene)
    assert (dissolver.dissolved, eraser.erased) == (1, 3)
    # Idempotent: running both jobs again changes nothing and erases nobody twice.
    await dissolver.finish_all()
    await eraser.finish_all()
    assert (dissolver.dissolved, eraser.erased) == (1, 3)
    await _assert_dissolved(stores, scene)


async def test_o4_p5_a_crash_while_ending_accounts_finishes_on_restart(stores: Stores) -> None:
    clock = ManualClock()
    scene = await _scene(stores, clock)
    dying, _ = _jobs(stores, clock, scene, fail_after=1)
    with pytest.raises(RuntimeError):
        await dying.finish_all()
    # The process died after ending one account, before deleting any row.
    assert len(scene.closed) == 1
    assert await stores.orgs.dissolving() == [scene.org]
    assert len(await stores.orgs.list_accounts(scene.org, limit=10)) == 3
    # A new process: its jobs find the organisation and the begun erasure again.
    dissolver, eraser = _jobs(stores, clock, scene)
    await eraser.finish_all()  # the erasure job may well run first
    await dissolver.finish_all()
    await eraser.finish_all()
    await _assert_dissolved(stores, scene)
    assert {u for u, _, _ in scene.closed} == set(scene.accounts.values())


async def test_o4_p5_a_crash_between_deleting_chunks_finishes_on_restart(
    stores: Stores,
) -> None:
    """The accounts were ended and some rows deleted (the members among them) when the
    process died: the restarted job ends no one twice in effect and deletes the rest."""
    clock = ManualClock()
    scene = await _scene(stores, clock)
    dissolver, _ = _jobs(stores, clock, scene)
    await dissolver._destroy_keys(scene.org)
    await dissolver._end_enterprise_accounts(scene.org)
    for _ in range(5):  # 5 copies, then 5 members (the accounts' own rows remain)
        assert await stores.orgs.delete_chunk(scene.org, limit=2) == 2
    assert await stores.orgs.list_members(scene.org, after_user=0, limit=10) == []
    assert len(await stores.orgs.list_accounts(scene.org, limit=10)) == 3
    restarted, eraser = _jobs(stores, clock, scene)
    await restarted.finish_all()
    await eraser.finish_all()
    await _assert_dissolved(stores, scene)
