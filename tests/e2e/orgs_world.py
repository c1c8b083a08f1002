"""A small world of users and organisations for the consent-rule tests (D4, D5).

Everything runs on one in-process server with a manual wall clock, so two worlds built
with the same steps produce byte-identical organisation data.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio

from client import ClientState, RivetClient
from client.connection import RivetConnection
from protocol import PROTOCOL_VERSION, replies
from protocol import ding as pd
from protocol import enterprise as pe
from protocol import orgs as po
from protocol import requests as rq
from server.app import RunningServer, serve
from server.auth import ServerKeys
from server.clock import ManualClock
from server.notify.memory import MemoryNotifier
from tests.e2e.conftest import make_config

_phones = itertools.count(1)


@dataclass
class World:
    server: RunningServer
    notifier: MemoryNotifier
    clock: ManualClock
    users: dict[str, ClientState] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def uid(self, name: str) -> int:
        user_id = self.users[name].user_id
        assert user_id is not None
        return user_id

    async def user(self, name: str) -> ClientState:
        phone = f"+1444{next(_phones):07d}"
        await RivetClient.request_code(self.url, phone=phone)
        code = self.notifier.last_code(phone)
        assert code is not None
        state = await RivetClient.login(self.url, phone=phone, code=code, display_name=name)
        self.users[name] = state
        return state

    async def call(self, name: str, request: rq.Request) -> Any:
        async with RivetClient.connect(self.url, self.users[name]) as client:
            return await client.request(request)

    async def direct(self, name: str, peer: str) -> str:
        """The id of the single chat between two users, as the server names it (D2: the
        organisation's own between two enterprise accounts of one organisation)."""
        opened: replies.Conversation = await self.call(
            name, rq.DirectOpen(rid=0, peer=self.uid(peer))
        )
        return opened.conv.conv

    async def say(self, name: str, conv: str, text: str) -> None:
        async with RivetClient.connect(self.url, self.users[name]) as client:
            await client.send(conv, text)
        self.clock.advance(1)

    async def ding(self, name: str, recipients: list[str], text: str) -> str:
        """Send a DING without escalation (issue #4: copied under the consent rule like a
        message); returns its id. Its ``cmid`` comes from its text, so two worlds built with
        the same steps send the same DINGs."""
        sent: pd.DingSent = await self.call(
            name,
            pd.DingSend(
                rid=0,
                cmid=hashlib.sha256(text.encode()).hexdigest()[:32],
                recipients=[self.uid(r) for r in recipients],
                text=text,
                plan=pd.DingPlan(),
            ),
        )
        self.clock.advance(1)
        return sent.ding.ding_id

    async def settle(self) -> None:
        """Let the outbox relay carry out every recorded effect."""
        await self.server.ctx.outbox.drain()

    async def create_org(self, admin: str, name: str) -> int:
        result: po.OrgResult = await self.call(
            admin, po.OrgCreate(rid=0, name=name, disclosure=f"{name} audits messages")
        )
        return result.org.org

    async def join(self, org: int, admin: str, user: str) -> None:
        """P4: the admin invites and the user accepts."""
        invited: po.JoinRequestResult = await self.call(
            admin, po.OrgInvite(rid=0, org=org, user=self.uid(user))
        )
        await self.call(
            user, po.OrgAnswer(rid=0, org=org, request_id=invited.request.request_id, accept=True)
        )

    async def dissolve(self, admin: str, org: int) -> po.DissolutionSummary:
        """O4: ask, confirm, and wait (bounded) until the background job has deleted the
        organisation; returns the summary the request answered with."""
        summary: po.DissolutionSummary = await self.call(admin, po.OrgDissolve(rid=0, org=org))
        await self.call(admin, po.OrgDissolveConfirm(rid=0, org=org, token=summary.token))
        orgs = self.server.ctx.stores.orgs
        for _ in range(500):
            if await orgs.get_org(org) is None:
                break
            await trio.sleep(0.02)
        assert await orgs.get_org(org) is None, "dissolution did not finish"
        return summary

    async def consent(self, user: str, org: int, granted: bool) -> None:
        await self.call(user, po.ConsentSet(rid=0, org=org, granted=granted))
        self.clock.advance(1)

    async def admin_outputs(self, admin: str, org: int, members: list[str]) -> dict[str, bytes]:
        """Every read-only admin path's output, encoded: the organisation's whole view."""
        enc = msgspec.msgpack.encode
        out: dict[str, bytes] = {}
        out["export"] = enc(await self.call(admin, po.AdminExport(rid=0, org=org)))
        out["search"] = enc(await self.call(admin, po.AdminSearch(rid=0, org=org)))
        for name in members:
            out[f"search:{name}"] = enc(
                await self.call(admin, po.AdminSearch(rid=0, org=org, member=self.uid(name)))
            )
        out["counts"] = enc(await self.call(admin, po.AdminCounts(rid=0, org=org)))
        out["audit"] = enc(await self.call(admin, po.AdminAudit(rid=0, org=org)))
        return out


async def login_enterprise_at(url: str, org: int, account: str, password: str) -> ClientState:
    """P5: log an enterprise account in (organisation + account name + password)."""
    async with RivetConnection.open(url) as conn:
        await conn.request(rq.Hello(rid=0, version=PROTOCOL_VERSION))
        tokens: replies.Tokens = await conn.request(
            pe.LoginEnterprise(rid=0, org=org, account=account, password=password)
        )
        await conn.aclose()
    return ClientState(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        user_id=tokens.session.user_id,
        device_id=tokens.session.device_id,
    )


@asynccontextmanager
async def open_world(
    tmp_path: Path, store: str, *, keys: ServerKeys | None = None
) -> AsyncIterator[World]:
    clock = ManualClock()
    notifier = MemoryNotifier(clock=clock)
    config = make_config(tmp_path, store=store, send_rate_per_second=1000, send_burst=1000)
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(
            partial(serve, config, clock=clock, notifier=notifier, keys=keys)
        )
        yield World(server, notifier, clock)
        server.shutdown()


async def texts(world: World, admin: str, org: int, **filters: Any) -> list[str]:
    page: po.CopyPage = await world.call(admin, po.AdminExport(rid=0, org=org, **filters))
    return [c.content.text for c in page.copies if c.content is not None]
