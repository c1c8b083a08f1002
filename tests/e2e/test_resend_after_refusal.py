"""M1 idempotency against a changed policy: a resend of a message that is already stored gets
its original ack (``duplicate`` true), even when the sender has since been muted, removed
from the group or blocked; a new message is refused as before."""

from __future__ import annotations

from client import RivetClient
from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.ids import direct_conversation_id
from tests.e2e.rig import Rig, refused, rig_fixture, uid

rig = rig_fixture("+1997")


def message(conv: str, cmid: str, text: str = "once") -> rq.MsgSend:
    return rq.MsgSend(rid=0, conv=conv, cmid=cmid, content=rq.Content(text=text))


async def test_m1_resend_after_mute_removal_and_block_gets_the_original_ack(rig: Rig) -> None:
    _, owner = await rig.new_user("owner")
    _, member = await rig.new_user("member")
    async with (
        RivetClient.connect(rig.url, owner) as o,
        RivetClient.connect(rig.url, member) as m,
    ):
        created: replies.GroupCreated = await o.request(
            rq.GroupCreate(rid=0, cmid="g", title="team", members=[uid(member)])
        )
        group = created.conv.conv
        direct = direct_conversation_id(uid(owner), uid(member))
        first_group: replies.Sent = await m.request(message(group, "m1"))
        first_direct: replies.Sent = await m.request(message(direct, "m2"))

        await o.request(rq.GroupMuteMember(rid=0, conv=group, user=uid(member), muted=True))
        again: replies.Sent = await m.request(message(group, "m1"))
        assert (again.seq, again.msg_id, again.duplicate) == (
            first_group.seq,
            first_group.msg_id,
            True,
        )
        assert await refused(m, message(group, "m3")) == ErrorCode.MUTED

        await o.request(rq.GroupRemove(rid=0, conv=group, user=uid(member)))
        again = await m.request(message(group, "m1"))
        assert (again.seq, again.duplicate) == (first_group.seq, True)
        assert await refused(m, message(group, "m4")) == ErrorCode.NOT_FOUND

        await o.request(rq.ContactsBlock(rid=0, user=uid(member), blocked=True))
        again = await m.request(message(direct, "m2"))
        assert (again.seq, again.msg_id, again.duplicate) == (
            first_direct.seq,
            first_direct.msg_id,
            True,
        )
        assert await refused(m, message(direct, "m5")) == ErrorCode.BLOCKED
        # The same key with other content is not a resend: the refusal stands.
        assert await refused(m, message(direct, "m2", "changed")) == ErrorCode.BLOCKED

        history: replies.History = await o.request(rq.MsgHistory(rid=0, conv=direct))
        assert [x.content.text for x in history.messages if x.content] == ["once"]
