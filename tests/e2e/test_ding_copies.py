"""Issue #4 with D4: a DING's copy to an organisation goes through the durable outbox.

The copy effect is written in the DING's own transaction (SQLite, ``ding_effects``); the
relay carries it out after the commit. These tests stop the process's relay at the two
points a crash can fall on, restart the server on the same data directory, and check the
copy is there exactly once: at least once because the effect is durable, at most once
because copies are keyed by their source (``ding:<x|o>:<number>``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from client import ClientState
from protocol import orgs as po
from protocol.ids import direct_conversation_id
from server.outbox import OutboxRelay
from storage.sqlite.ding import SqliteDingStore
from tests.e2e.orgs_world import World, open_world


async def _consenting_member_dings(w: World) -> int:
    for name in ("admin", "member", "friend"):
        await w.user(name)
    org = await w.create_org("admin", "Acme")
    await w.join(org, "admin", "member")
    await w.consent("member", org, True)
    await w.say("member", direct_conversation_id(w.uid("member"), w.uid("friend")), "hello")
    await w.ding("member", ["friend"], "the server room is on fire")
    return org


async def _ding_copies(w: World, org: int) -> list[po.CopyInfo]:
    page: po.CopyPage = await w.call("admin", po.AdminExport(rid=0, org=org))
    return [c for c in page.copies if c.origin == "ding"]


async def _restarted(w: World, users: dict[str, ClientState]) -> None:
    w.users.update(users)
    await w.settle()
    await w.settle()  # a repeat changes nothing


async def test_d4_a_crash_between_the_dings_commit_and_its_copy_copies_it_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def dead(self: OutboxRelay) -> None:
        """The relay of a process that died right after the DING committed."""

    monkeypatch.setattr(OutboxRelay, "drain", dead)
    async with open_world(tmp_path, "sqlite") as w:
        org = await _consenting_member_dings(w)
        users = dict(w.users)
        assert await w.server.ctx.stores.orgs.copies(org, limit=10, include_hidden=True) == []
        (pending,) = await w.server.ctx.stores.ding.pending_effects(after=0, limit=10)
        assert pending.kind == f"org_copy:{org}"
    monkeypatch.undo()

    async with open_world(tmp_path, "sqlite") as w:
        await _restarted(w, users)
        (copy,) = await _ding_copies(w, org)
        assert copy.content is not None and copy.content.text == "the server room is on fire"
        assert copy.member == w.uid("member")
        assert await w.server.ctx.stores.ding.pending_effects(after=0, limit=10) == []


async def test_d4_a_crash_after_the_copy_before_the_effect_is_finished_copies_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(self: SqliteDingStore, effect_id: int) -> None:
        raise RuntimeError("the process dies before the effect is marked finished")

    monkeypatch.setattr(SqliteDingStore, "finish_effect", crash)
    async with open_world(tmp_path, "sqlite") as w:
        org = await _consenting_member_dings(w)
        users = dict(w.users)
        with pytest.raises(RuntimeError):
            await w.settle()
        (first,) = await _ding_copies(w, org)
        assert len(await w.server.ctx.stores.ding.pending_effects(after=0, limit=10)) == 1
    monkeypatch.undo()

    async with open_world(tmp_path, "sqlite") as w:
        await _restarted(w, users)
        (again,) = await _ding_copies(w, org)
        assert again == first  # the repeat found the copy by its source and added none
        assert w.server.ctx.outbox.copied == 0
        assert await w.server.ctx.stores.ding.pending_effects(after=0, limit=10) == []
