"""Groups: create, add, remove, leave, rename, roles, ownership, muting, history rule.

Every change is a ``system`` entry in the group's own sequence, committed atomically with
the membership or setting it changes, so members replaying the sequence see exactly when
each change happened. Changes to one group run one at a time (``server/group_locks.py``):
read, decide, append.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import wraps
from typing import Protocol, TypeVar

from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode, ProtocolError
from protocol.events import SystemInfo
from protocol.ids import (
    conversation_kind,
    conversation_org,
    group_conversation_id,
    org_group_conversation_id,
)
from server import policy
from server.connection import Connection
from server.context import Context
from server.services import enterprise, group_capacity
from server.services.render import conversation_info, fingerprint, message_event, system_body
from storage.records import (
    ConversationChange,
    IdempotencyKey,
    MemberChange,
    NewConversation,
    NewEntry,
)


class _OnGroup(Protocol):
    @property
    def conv(self) -> str: ...


_Req = TypeVar("_Req", bound=_OnGroup)


def _one_at_a_time(
    change: Callable[[Context, Connection, _Req], Awaitable[replies.Changed]],
) -> Callable[[Context, Connection, _Req], Awaitable[replies.Changed]]:
    """M1, M2: a change to a group decides and commits before the next one reads it."""

    @wraps(change)
    async def serialised(ctx: Context, conn: Connection, req: _Req) -> replies.Changed:
        async with ctx.group_locks.hold(req.conv):
            return await change(ctx, conn, req)

    return serialised


async def create(ctx: Context, conn: Connection, req: rq.GroupCreate) -> replies.GroupCreated:
    caller = _user(conn)
    invited = sorted(set(req.members) - {caller})
    await _require_users(ctx, invited)
    if req.org is not None:  # D2: an organisation-internal group holds only its accounts
        await _check_placement(ctx, org_group_conversation_id(req.org, 0), [caller, *invited])
    await enterprise.check_group(ctx, [caller, *invited], joining=[caller, *invited])  # O3
    limit = ctx.config.group_member_limit
    if len(invited) + 1 > limit:
        raise ProtocolError(ErrorCode.MEMBER_LIMIT, f"a group allows {limit} members")
    info = SystemInfo(action="created", actor=caller, users=invited, title=req.title)
    key = IdempotencyKey(
        sender=caller,
        client_id="g:" + req.cmid,
        fingerprint=fingerprint(req.title, ",".join(map(str, invited)), str(req.history_visible)),
    )
    conv_id = await _new_group_id(ctx, req.org)
    members = ((caller, "owner"), *((user, "member") for user in invited))
    appended = await ctx.conversations(conv_id).append(
        NewEntry(
            conv_id=conv_id,
            kind="system",
            sender=caller,
            ts=ctx.clock.now_ms(),
            body=system_body(info),
            cmid=None,  # cmid is for messages; the creation is matched by its ack
            idempotency=key,
            create=NewConversation(
                conv_id=conv_id,
                kind="group",
                title=req.title,
                owner_id=caller,
                member_limit=limit,
                history_visible=req.history_visible,
                members=members,  # type: ignore[arg-type]
            ),
        )
    )
    if not appended.duplicate:
        ctx.publish_entry(appended.entry, [m for m, _ in members], message_event(appended.entry))
    return replies.GroupCreated(
        conv=conversation_info(appended.conversation),
        seq=appended.entry.seq,
        stream=appended.entry.stream,
        duplicate=appended.duplicate,
    )


@_one_at_a_time
async def add(ctx: Context, conn: Connection, req: rq.GroupAdd) -> replies.Changed:
    caller = _user(conn)
    conversation, _actor = await _manage(ctx, "add", req.conv, caller)
    users = sorted(set(req.users))
    await _require_users(ctx, users)
    for user in users:
        existing = await ctx.conversations(req.conv).get_member(req.conv, user)
        if existing is not None and existing.active:
            raise ProtocolError(ErrorCode.ALREADY_MEMBER, f"user {user} is already a member")
    await _check_placement(ctx, req.conv, users)  # D2
    limit = await group_capacity.effective_limit(ctx, conversation)  # M2: paid expansions
    policy.may_admit(conversation, adding=len(users), limit=limit)
    current = await ctx.members.member_ids(req.conv)
    await enterprise.check_group(ctx, [*current, *users], joining=users)  # O3
    changes = tuple(
        MemberChange(
            user_id=u, op="add", role="member", history_from_start=conversation.history_visible
        )
        for u in users
    )
    info = SystemInfo(action="added", actor=caller, users=users)
    return await _append(ctx, req.conv, caller, info, member_changes=changes)


@_one_at_a_time
async def remove(ctx: Context, conn: Connection, req: rq.GroupRemove) -> replies.Changed:
    caller = _user(conn)
    _conversation, actor = await _manage(ctx, "remove", req.conv, caller)
    policy.may_act_on(actor, await ctx.conversations(req.conv).get_member(req.conv, req.user))
    info = SystemInfo(action="removed", actor=caller, users=[req.user])
    return await _append(
        ctx,
        req.conv,
        caller,
        info,
        member_changes=(MemberChange(user_id=req.user, op="remove"),),
        departed=(req.user,),
    )


@_one_at_a_time
async def leave(ctx: Context, conn: Connection, req: rq.GroupLeave) -> replies.Changed:
    caller = _user(conn)
    if conversation_kind(req.conv) != "group":
        raise policy.not_found()
    policy.may_leave(await ctx.conversations(req.conv).get_member(req.conv, caller))
    info = SystemInfo(action="left", actor=caller, users=[caller])
    return await _append(
        ctx,
        req.conv,
        caller,
        info,
        member_changes=(MemberChange(user_id=caller, op="remove"),),
        departed=(caller,),
    )


async def depart(ctx: Context, conv_id: str, user_id: int) -> None:
    """A1: an erased account leaves a group or a single chat, as a member who leaves (a
    ``left`` entry the others see; a single chat then takes no more messages,
    ``policy.may_send``). A group's owner stays: ``account.delete`` refuses an owner with
    others, and a group whose owner was a dissolved organisation's enterprise account (O4)
    keeps it, since choosing a successor is not the erasure's to do. Nothing if no longer
    a member."""
    async with ctx.group_locks.hold(conv_id):  # as a member leaving: after the change in hand
        member = await ctx.conversations(conv_id).get_member(conv_id, user_id)
        if member is None or not member.active or member.role == "owner":
            return
        info = SystemInfo(action="left", actor=user_id, users=[user_id])
        await _append(
            ctx,
            conv_id,
            user_id,
            info,
            member_changes=(MemberChange(user_id=user_id, op="remove"),),
            departed=(user_id,),
        )


@_one_at_a_time
async def rename(ctx: Context, conn: Connection, req: rq.GroupRename) -> replies.Changed:
    caller = _user(conn)
    await _manage(ctx, "rename", req.conv, caller)
    info = SystemInfo(action="renamed", actor=caller, title=req.title)
    return await _append(ctx, req.conv, caller, info, change=ConversationChange(title=req.title))


@_one_at_a_time
async def set_role(ctx: Context, conn: Connection, req: rq.GroupSetRole) -> replies.Changed:
    caller = _user(conn)
    _conversation, actor = await _manage(ctx, "set_role", req.conv, caller)
    policy.may_act_on(actor, await ctx.conversations(req.conv).get_member(req.conv, req.user))
    info = SystemInfo(action="role", actor=caller, users=[req.user], role=req.role)
    change = MemberChange(user_id=req.user, op="update", role=req.role)
    return await _append(ctx, req.conv, caller, info, member_changes=(change,))


@_one_at_a_time
async def transfer(ctx: Context, conn: Connection, req: rq.GroupTransfer) -> replies.Changed:
    """The owner hands the group to another current member and becomes an admin."""
    caller = _user(conn)
    await _manage(ctx, "transfer", req.conv, caller)
    target = await ctx.conversations(req.conv).get_member(req.conv, req.user)
    if target is None or not target.active:
        raise ProtocolError(ErrorCode.NOT_MEMBER)
    if req.user == caller:
        raise ProtocolError(ErrorCode.INVALID_STATE, "you already own this group")
    info = SystemInfo(action="transferred", actor=caller, users=[req.user], role="owner")
    changes = (
        MemberChange(user_id=req.user, op="update", role="owner", muted=False),
        MemberChange(user_id=caller, op="update", role="admin"),
    )
    return await _append(
        ctx,
        req.conv,
        caller,
        info,
        member_changes=changes,
        change=ConversationChange(owner_id=req.user),
    )


@_one_at_a_time
async def mute_member(ctx: Context, conn: Connection, req: rq.GroupMuteMember) -> replies.Changed:
    caller = _user(conn)
    _conversation, actor = await _manage(ctx, "mute_member", req.conv, caller)
    policy.may_act_on(actor, await ctx.conversations(req.conv).get_member(req.conv, req.user))
    info = SystemInfo(action="member_muted", actor=caller, users=[req.user], flag=req.muted)
    change = MemberChange(user_id=req.user, op="update", muted=req.muted)
    return await _append(ctx, req.conv, caller, info, member_changes=(change,))


@_one_at_a_time
async def mute_all(ctx: Context, conn: Connection, req: rq.GroupMuteAll) -> replies.Changed:
    """Mute-all silences ordinary members; the owner and admins are exempt."""
    caller = _user(conn)
    await _manage(ctx, "mute_all", req.conv, caller)
    info = SystemInfo(action="mute_all", actor=caller, flag=req.muted)
    return await _append(ctx, req.conv, caller, info, change=ConversationChange(mute_all=req.muted))


@_one_at_a_time
async def set_history(ctx: Context, conn: Connection, req: rq.GroupSetHistory) -> replies.Changed:
    caller = _user(conn)
    await _manage(ctx, "set_history", req.conv, caller)
    info = SystemInfo(action="history", actor=caller, flag=req.visible)
    change = ConversationChange(history_visible=req.visible)
    return await _append(ctx, req.conv, caller, info, change=change)


async def info(ctx: Context, conn: Connection, req: rq.GroupInfo) -> replies.Conversation:
    caller = _user(conn)
    if conversation_kind(req.conv) != "group":
        raise policy.not_found()
    policy.may_read(await ctx.conversations(req.conv).get_member(req.conv, caller))
    conversation = await ctx.conversations(req.conv).get_conversation(req.conv)
    if conversation is None:
        raise policy.not_found()
    return replies.Conversation(conv=await group_capacity.conversation_info(ctx, conversation))


async def members(ctx: Context, conn: Connection, req: rq.GroupMembers) -> replies.Members:
    caller = _user(conn)
    if conversation_kind(req.conv) != "group":
        raise policy.not_found()
    policy.may_read(await ctx.conversations(req.conv).get_member(req.conv, caller))
    rows = await ctx.conversations(req.conv).list_members(
        req.conv, after_user=req.after_user, limit=req.limit
    )
    return replies.Members(
        conv=req.conv,
        members=[
            replies.MemberInfo(
                user_id=m.user_id, role=m.role, muted=m.muted, joined_seq=m.visible_from
            )
            for m in rows
        ],
        next_after=rows[-1].user_id if len(rows) == req.limit else None,
    )


# --- helpers ---------------------------------------------------------------------------------


async def _manage(ctx: Context, action: policy.GroupAction, conv_id: str, caller: int):  # type: ignore[no-untyped-def]
    if conversation_kind(conv_id) != "group":
        raise policy.not_found()
    store = ctx.conversations(conv_id)
    conversation = await store.get_conversation(conv_id)
    actor = await store.get_member(conv_id, caller)
    return policy.may_manage(action, conversation=conversation, actor=actor)


async def _new_group_id(ctx: Context, org: int | None) -> str:
    """A fresh group id: in the organisation's store when the group is created in an
    organisation's name (D2; placement checked by the caller), else cross-domain."""
    if org is None:
        return group_conversation_id(await ctx.stores.cross.next_group_number())
    return org_group_conversation_id(org, await ctx.stores.org_conversations.next_group_number())


async def _check_placement(ctx: Context, conv_id: str, users: Sequence[int]) -> None:
    """D2: who may be put in an organisation-internal group (cross-domain groups: anyone)."""
    if conversation_org(conv_id) is not None:
        policy.may_place(conv_id, await ctx.enterprise.accounts_of(list(users)))


async def _require_users(ctx: Context, user_ids: Sequence[int]) -> None:
    if not user_ids:
        return
    found = {u.user_id for u in await ctx.stores.personal.get_users(user_ids) if policy.exists(u)}
    missing = [u for u in user_ids if u not in found]
    if missing:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no such user: {missing[0]}")


async def _append(
    ctx: Context,
    conv_id: str,
    caller: int,
    info: SystemInfo,
    *,
    member_changes: tuple[MemberChange, ...] = (),
    change: ConversationChange | None = None,
    departed: tuple[int, ...] = (),
) -> replies.Changed:
    appended = await ctx.conversations(conv_id).append(
        NewEntry(
            conv_id=conv_id,
            kind="system",
            sender=caller,
            ts=ctx.clock.now_ms(),
            body=system_body(info),
            require_member=caller,
            member_changes=member_changes,
            conversation_change=change,
        )
    )
    if member_changes:
        ctx.members.invalidate(conv_id)
    members = await ctx.members.member_ids(conv_id)
    recipients = policy.entry_recipients(
        appended.conversation, appended.entry, members, departed=departed
    )
    ctx.publish_entry(appended.entry, recipients, message_event(appended.entry))
    return replies.Changed(conv=conv_id, seq=appended.entry.seq, stream=appended.entry.stream)


def _user(conn: Connection) -> int:
    assert conn.user_id is not None
    return conn.user_id
