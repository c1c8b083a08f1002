"""Notification settings and offline pushes (M3) over the real WebSocket.

A device with no open connection gets a push (through the Notifier; ``harness.notifier``
records it) for each new message, unless its user switched notifications off or muted the
conversation. Settings are personal data and sync to all the user's devices.

Pushes are sent by a background queue in offer order, so "no push" is shown with a barrier:
a later message whose push must appear, after which the earlier one can no longer come.
"""

from __future__ import annotations

import pytest
import trio

from client import ClientState, RivetClient
from client.connection import RivetError
from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.events import SettingsEvent
from protocol.ids import direct_conversation_id
from server.notify.records import PushRecord
from tests.e2e.rig import Rig as BaseRig
from tests.e2e.rig import next_of, rig_fixture, uid


class Rig(BaseRig):
    """Users and devices come back offline: pushes go to devices with no open connection."""

    async def new_user(self, name: str) -> tuple[str, ClientState]:
        phone, state = await super().new_user(name)
        await self.offline(state)
        return phone, state

    async def new_device(self, phone: str, device: str) -> ClientState:
        """Another device of the user: past the one-code-per-30-s throttle (C2)."""
        state = await super().new_device(phone, device)
        await self.offline(state)
        return state

    async def offline(self, state: ClientState) -> None:
        """Until the server has closed every connection of the user (closing is async)."""
        hub = self.server.ctx.hub
        with trio.fail_after(5):
            while True:
                if not hub.is_online(uid(state)):
                    return
                await trio.sleep(0.005)

    async def push_for(self, user: ClientState, conv: str, *, count: int = 1) -> list[PushRecord]:
        """Wait until ``user`` has ``count`` pushes about ``conv``; all their pushes."""
        with trio.fail_after(5):
            while True:
                mine = [p for p in self.notifier.pushes if p.user_id == uid(user)]
                if sum(1 for p in mine if p.conv == conv) >= count:
                    return mine
                await trio.sleep(0.005)


rig = rig_fixture("+1444", rig_type=Rig, receipt_flush_seconds=0.05)


async def test_m3_offline_user_with_notifications_on_gets_a_push(rig: Rig) -> None:
    _, alice = await rig.new_user("alice")
    _, bob = await rig.new_user("bob")
    _, carol = await rig.new_user("carol")
    direct = direct_conversation_id(uid(alice), uid(bob))
    async with (
        RivetClient.connect(rig.url, alice) as a,
        RivetClient.connect(rig.url, carol),
    ):
        created: replies.GroupCreated = await a.request(
            rq.GroupCreate(rid=0, cmid="g", title="g", members=[uid(bob), uid(carol)])
        )
        group = created.conv.conv
        await a.send(group, "top secret text")
        (push,) = await rig.push_for(bob, group)
        assert (push.user_id, push.device_id, push.conv) == (uid(bob), bob.device_id, group)
        # Pushes never carry message content.
        assert "top secret" not in push.title and "top secret" not in push.body
        await a.send(direct, "second")
        await rig.push_for(bob, direct)
    # The sender and the member who was online got none.
    assert {p.user_id for p in rig.notifier.pushes} == {uid(bob)}
    assert [p.conv for p in rig.notifier.pushes] == [group, direct]


async def test_m3_offline_device_of_an_online_user_gets_a_push(rig: Rig) -> None:
    """Pushes go to every device without an open connection (server/push.py), also when
    another device of the same user is online."""
    _, alice = await rig.new_user("alice")
    bob_phone, bob = await rig.new_user("bob")
    tablet = await rig.new_device(bob_phone, "tablet")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with (
        RivetClient.connect(rig.url, alice) as a,
        RivetClient.connect(rig.url, bob),
    ):
        await a.send(conv, "hello")
        pushes = await rig.push_for(bob, conv)
        assert [p.device_id for p in pushes] == [tablet.device_id]


async def test_m3_notifications_off_stops_pushes(rig: Rig) -> None:
    _, alice = await rig.new_user("alice")
    _, bob = await rig.new_user("bob")
    _, carol = await rig.new_user("carol")
    to_bob = direct_conversation_id(uid(alice), uid(bob))
    to_carol = direct_conversation_id(uid(alice), uid(carol))
    async with RivetClient.connect(rig.url, bob) as b:
        await b.request(rq.SettingsSet(rid=0, notifications=False))
    await rig.offline(bob)
    async with RivetClient.connect(rig.url, alice) as a:
        await a.send(to_bob, "you will not hear of this")
        await a.send(to_carol, "barrier")
        await rig.push_for(carol, to_carol)
        assert [p.user_id for p in rig.notifier.pushes] == [uid(carol)]

        async with RivetClient.connect(rig.url, bob) as b:
            await b.request(rq.SettingsSet(rid=0, notifications=True))
        await rig.offline(bob)
        await a.send(to_bob, "now you will")
        (push,) = await rig.push_for(bob, to_bob)
        assert push.device_id == bob.device_id


async def test_m3_muted_conversation_gets_no_pushes(rig: Rig) -> None:
    _, alice = await rig.new_user("alice")
    _, bob = await rig.new_user("bob")
    direct = direct_conversation_id(uid(alice), uid(bob))
    async with RivetClient.connect(rig.url, alice) as a:
        created: replies.GroupCreated = await a.request(
            rq.GroupCreate(rid=0, cmid="g", title="g", members=[uid(bob)])
        )
        group = created.conv.conv
        await a.send(direct, "opens the chat")
        await rig.push_for(bob, direct)
        async with RivetClient.connect(rig.url, bob) as b:
            await b.request(rq.ConvMute(rid=0, conv=direct, muted=True))
        await rig.offline(bob)
        await a.send(direct, "muted")
        await a.send(group, "not muted")
        pushes = await rig.push_for(bob, group)
        assert [p.conv for p in pushes] == [direct, group]

        async with RivetClient.connect(rig.url, bob) as b:
            await b.request(rq.ConvMute(rid=0, conv=direct, muted=False))
        await rig.offline(bob)
        await a.send(direct, "unmuted")
        pushes = await rig.push_for(bob, direct, count=2)
        assert [p.conv for p in pushes] == [direct, group, direct]


async def test_m3_settings_sync_to_the_users_other_devices(rig: Rig) -> None:
    _, alice = await rig.new_user("alice")
    bob_phone, bob = await rig.new_user("bob")
    tablet = await rig.new_device(bob_phone, "tablet")
    laptop = await rig.new_device(bob_phone, "laptop")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with RivetClient.connect(rig.url, laptop) as lap:
        assert await lap.catch_up() == []  # the laptop syncs once, then stays offline
    async with RivetClient.connect(rig.url, alice) as a:
        await a.send(conv, "hi")
    async with (
        RivetClient.connect(rig.url, bob) as b,
        RivetClient.connect(rig.url, tablet) as t,
    ):
        await b.request(rq.SettingsSet(rid=0, notifications=False))
        for client in (t, b):
            event = await next_of(client, SettingsEvent)
            assert (event.notifications, event.conv, event.conv_muted) == (False, None, None)
        await b.request(rq.ConvMute(rid=0, conv=conv, muted=True))
        event = await next_of(t, SettingsEvent)
        assert (event.notifications, event.conv, event.conv_muted) == (False, conv, True)
        page: replies.SyncPage = await t.request(rq.Sync(rid=0))
        assert [(s.conv, s.muted) for s in page.summaries] == [(conv, True)]
        with pytest.raises(RivetError) as refused:
            await b.request(rq.ConvMute(rid=0, conv="g:4242", muted=True))
        assert refused.value.code == ErrorCode.NOT_FOUND

    async with RivetClient.connect(rig.url, laptop) as lap:
        caught = await lap.catch_up()
        settings = [e for e in caught if isinstance(e, SettingsEvent)]
        assert [(e.notifications, e.conv, e.conv_muted) for e in settings] == [
            (False, None, None),
            (False, conv, True),
        ]
