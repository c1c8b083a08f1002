"""Sending, recalling and reading messages; history; read receipts; opening single chats."""

from __future__ import annotations

import time

import trio

from protocol import replies
from protocol import requests as rq
from protocol.errors import ErrorCode, ProtocolError
from protocol.ids import conversation_kind
from server import policy
from server.connection import Connection
from server.context import Context
from server.metrics import METRICS
from server.outbox import org_copy_effect
from server.services import enterprise
from server.services.render import (
    content_body,
    conversation_info,
    entry_event,
    fingerprint,
    message_event,
)
from storage.errors import IdempotencyConflict
from storage.interfaces import CrossDomainStore
from storage.records import (
    Appended,
    Conversation,
    ConversationKindName,
    Entry,
    IdempotencyKey,
    Member,
    NewConversation,
    NewEntry,
    RoleName,
)


async def send(ctx: Context, conn: Connection, req: rq.MsgSend) -> replies.Sent:
    """M1: persist the message durably, then ack, then fan out."""
    caller = _user(conn)
    cross = ctx.conversations(req.conv)  # D2/D3: the id names the store
    body = content_body(req.content)
    key = IdempotencyKey(
        sender=caller, client_id="m:" + req.cmid, fingerprint=fingerprint(req.conv, body)
    )
    try:
        new_entry, member = await _checked_entry(ctx, caller, cross, req, body, key)
    except ProtocolError:
        # A resend of a message that is already stored gets its original ack even if the
        # sender may no longer send here (muted, removed or blocked since): the write
        # happened, and the client must stop resending it. Looked up only on a refusal,
        # so the common path pays nothing for it.
        original = await _recorded(cross, key)
        if original is None:
            raise
        METRICS.duplicate_sends.inc()
        return _sent(original)
    # A cancelled request must not leave a stored message that nobody online was told
    # about. ``append`` reports a commit even when cancelled (the store interface's
    # promise), and from here to the publication nothing checkpoints unless the members
    # must be read, which is shielded: no cancel scope on the common path (~7 us each).
    started = time.perf_counter()
    appended = await cross.append(new_entry)
    METRICS.commit_seconds.observe(time.perf_counter() - started)
    (METRICS.duplicate_sends if appended.duplicate else METRICS.messages).inc()
    entry = appended.entry
    if not appended.duplicate:
        members = ctx.members.known_member_ids(req.conv)
        if members is None:
            with trio.CancelScope(shield=True):
                members = await ctx.members.member_ids(req.conv)
            assert members is not None  # the scope swallows nothing: it is never cancelled
        recipients = policy.entry_recipients(appended.conversation, entry, members, departed=())
        # The event carries the request's content: the body was encoded from it.
        ctx.publish_entry(entry, recipients, message_event(entry, content=req.content))
        ctx.pushes.offer(entry, recipients)
        if new_entry.effects:
            ctx.outbox.kick()
        if member is not None and appended.conversation.kind == "group":
            # Sending moved the sender's read position to their message (``append``): the
            # others' messages it passed over were newly read, and their senders get the
            # new counts, as after a ``read``.
            first = member.first_seen_after(member.read_seq)
            if first is not None:
                ctx.receipts.mark(req.conv, first_seq=first, last_seq=entry.seq - 1)
    return _sent(appended)


async def _checked_entry(
    ctx: Context,
    caller: int,
    cross: CrossDomainStore,
    req: rq.MsgSend,
    body: bytes,
    key: IdempotencyKey,
) -> tuple[NewEntry, Member | None]:
    """Every check of a message (the router's policy), then the entry to append and the
    sender's membership row before it (None for a single chat's first message)."""
    kind = conversation_kind(req.conv)
    conversation = await cross.get_conversation(req.conv)
    create: NewConversation | None = None
    blocked = False
    member: Member | None = None
    if kind == "group":
        member = await cross.get_member(req.conv, caller)
    else:
        peer = policy.direct_peer(caller, req.conv)
        if conversation is None:
            peer_user = await ctx.stores.personal.get_user(peer)
            policy.may_open_direct(peer_exists=policy.exists(peer_user))
            policy.may_place(req.conv, await ctx.enterprise.accounts_of([caller, peer]))
            create = _new_direct(ctx, req.conv, caller, peer)
        else:
            member = await cross.get_member(req.conv, caller)
        if peer != caller:
            row = await ctx.stores.personal.get_contact(peer, caller)
            blocked = row is not None and row.state == "blocked"
    policy.check_content(req.content)
    policy.may_send(conversation=conversation, member=member, blocked_by_peer=blocked)
    await enterprise.check_send(ctx, caller, req.conv, req.content)  # O1, O3
    if conversation is not None and member is not None:
        policy.may_mention(conversation, member, mention_all=req.content.mention_all)
    elif req.content.mention_all:
        raise ProtocolError(ErrorCode.FORBIDDEN, "@all is only for groups")
    new_entry = NewEntry(
        conv_id=req.conv,
        kind="message",
        sender=caller,
        ts=ctx.clock.now_ms(),
        body=body,
        cmid=req.cmid,
        idempotency=key,
        create=create,
        require_member=None if create is not None else caller,
        # D4: the organisations the sender belongs to now; the outbox relay applies the
        # consent rule to each at this message's time.
        effects=org_copy_effect(await ctx.org_index.orgs_of(caller)),
    )
    return new_entry, member


async def _recorded(store: CrossDomainStore, key: IdempotencyKey) -> Appended | None:
    """The message stored under ``key``, or None (also when the key was used for another
    message: then the refusal at hand is the answer)."""
    try:
        return await store.recorded(key)
    except IdempotencyConflict:
        return None


def _sent(appended: Appended) -> replies.Sent:
    entry = appended.entry
    return replies.Sent(
        conv=entry.conv_id,
        seq=entry.seq,
        msg_id=entry.stream,
        ts=entry.ts,
        stream=entry.stream,
        duplicate=appended.duplicate,
    )


def _new_direct(ctx: Context, conv_id: str, caller: int, peer: int) -> NewConversation:
    kind: ConversationKindName = "self" if caller == peer else "direct"
    members: tuple[tuple[int, RoleName], ...] = (
        ((caller, "member"),) if caller == peer else ((caller, "member"), (peer, "member"))
    )
    return NewConversation(
        conv_id=conv_id,
        kind=kind,
        title="",
        owner_id=None,
        member_limit=len(members),
        members=members,
    )


async def recall(ctx: Context, conn: Connection, req: rq.MsgRecall) -> replies.Recalled:
    """M4: the sender within 24 hours, a group's owner/admins any time. The content is
    erased from storage; the seq stays as a tombstone; every member's devices are told."""
    caller = _user(conn)
    cross = ctx.conversations(req.conv)
    member = await cross.get_member(req.conv, caller)
    conversation = await cross.get_conversation(req.conv)
    if conversation is None:
        raise policy.not_found()
    entry = await cross.get_entry(req.conv, req.seq)
    if member is not None and entry is not None and not member.sees(entry.seq):
        entry = None
    try:
        policy.may_recall(caller=caller, member=member, entry=entry, now=ctx.clock.now_ms())
    except ProtocolError as error:
        # M4: recalling a recalled message again returns the first recall, also once the
        # window has passed (the recall happened; a client resending it must not be told
        # that it failed). The window is the last check: who may recall is judged as usual.
        if error.code != ErrorCode.RECALL_WINDOW_PASSED or entry is None or not entry.recalled:
            raise
    result = await cross.recall(conv_id=req.conv, seq=req.seq, by=caller, now=ctx.clock.now_ms())
    if not result.duplicate:
        # Stored (the store reports a commit even when cancelled): the members are read
        # shielded, or a cancellation landing there would leave the recall unannounced.
        with trio.CancelScope(shield=True):
            members = await ctx.members.seeing(req.conv, req.seq)
        recipients = policy.entry_recipients(conversation, result.entry, members, departed=())
        ctx.publish_entry(result.entry, recipients, entry_event(result.entry))
    return replies.Recalled(conv=req.conv, seq=req.seq, stream=result.entry.stream)


async def recall_for_organisation(ctx: Context, conv_id: str, seq: int, by: int) -> bool:
    """O1: an admin's recall in one of the organisation's own conversations (``o:<org>:``),
    for everyone in it. Reached only through an ``OrgView``, which checks the organisation;
    a cross-domain conversation never comes here. False if there is no such message."""
    store = ctx.stores.org_conversations
    conversation = await store.get_conversation(conv_id)
    entry = await store.get_entry(conv_id, seq)
    if conversation is None or entry is None or entry.kind != "message":
        return False
    result = await store.recall(conv_id=conv_id, seq=seq, by=by, now=ctx.clock.now_ms())
    if not result.duplicate:
        with trio.CancelScope(shield=True):  # as in ``recall``
            members = await ctx.members.seeing(conv_id, seq)
        recipients = policy.entry_recipients(conversation, result.entry, members, departed=())
        ctx.publish_entry(result.entry, recipients, entry_event(result.entry))
    return True


async def history(ctx: Context, conn: Connection, req: rq.MsgHistory) -> replies.History:
    caller = _user(conn)
    store = ctx.conversations(req.conv)
    found = await store.get_member(req.conv, caller)
    if found is None and conversation_kind(req.conv) != "group":
        # A single chat exists implicitly for its two participants; before its first
        # message its history is empty. Anyone else: not found.
        policy.direct_peer(caller, req.conv)
        return replies.History(conv=req.conv, messages=[], more=False)
    member = policy.may_read(found)
    # Every range the member sees, newest first (M1: a member added back to a group that
    # hides its history still sees what they saw before, never what was said between).
    entries: list[Entry] = []
    before_seq = req.before_seq
    for first, last in reversed(member.ranges):
        if len(entries) > req.limit:
            break
        if before_seq is not None and first >= before_seq:
            continue
        entries = [
            *await store.history(
                req.conv,
                visible_from=first,
                visible_to=last,
                before_seq=before_seq,
                limit=req.limit + 1 - len(entries),
            ),
            *entries,
        ]
    more = len(entries) > req.limit
    if more:
        entries = entries[1:]
    return replies.History(conv=req.conv, messages=[message_event(e) for e in entries], more=more)


async def read(ctx: Context, conn: Connection, req: rq.Read) -> replies.ReadDone:
    """Move the caller's read position; their devices get the new unread count, a single
    chat's peer gets a read receipt, a group's senders get coalesced read counts."""
    caller = _user(conn)
    cross = ctx.conversations(req.conv)
    member = policy.may_write(await cross.get_member(req.conv, caller))
    conversation = await cross.get_conversation(req.conv)
    if conversation is None:
        raise policy.not_found()
    # The position never moves onto what the member cannot see (from before they joined a
    # group that hides its history, or while they were away from it): ``sync`` would never
    # replay that read entry (the store's visibility rule), so it would reach only the
    # devices online now. Beyond the last seq is the current range's: clamped by the store.
    seq = req.seq if member.sees(req.seq) else 0
    moved = await cross.mark_read(conv_id=req.conv, user_id=caller, seq=seq, now=ctx.clock.now_ms())
    if moved.entry is not None:
        members = await ctx.members.member_ids(req.conv)
        recipients = policy.entry_recipients(conversation, moved.entry, members, departed=())
        # The reader's devices learn their new unread count; a peer's receipt does not.
        ctx.publish([caller], entry_event(moved.entry, unread=moved.unread))
        ctx.publish(recipients - {caller}, entry_event(moved.entry))
        if conversation.kind == "group":
            # Newly read: the messages the member sees, above the old position (those from
            # before they joined, or from while they were away, do not count them: their
            # counts did not change).
            first = member.first_seen_after(member.read_seq)
            if first is not None:
                ctx.receipts.mark(req.conv, first_seq=first, last_seq=moved.read_seq)
    return replies.ReadDone(conv=req.conv, seq=moved.read_seq, unread=moved.unread)


async def receipt_counts(
    ctx: Context, conn: Connection, req: rq.ReceiptCounts
) -> replies.ReceiptCounts:
    caller = _user(conn)
    store = ctx.conversations(req.conv)
    member = policy.may_read(await store.get_member(req.conv, caller))
    seqs = [s for s in req.seqs if member.sees(s)]
    counts = await store.read_counts(req.conv, seqs)
    return replies.ReceiptCounts(
        conv=req.conv,
        counts=[replies.ReceiptCount(seq=c.seq, read=c.read, unread=c.unread) for c in counts],
    )


async def receipt_members(
    ctx: Context, conn: Connection, req: rq.ReceiptMembers
) -> replies.ReceiptMembers:
    caller = _user(conn)
    store = ctx.conversations(req.conv)
    member = policy.may_read(await store.get_member(req.conv, caller))
    if not member.sees(req.seq):
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such message")
    users = await store.readers(
        req.conv, req.seq, read=req.read, after_user=req.after_user, limit=req.limit
    )
    next_after = users[-1] if len(users) == req.limit else None
    return replies.ReceiptMembers(conv=req.conv, seq=req.seq, users=users, next_after=next_after)


async def open_direct(ctx: Context, conn: Connection, req: rq.DirectOpen) -> replies.Conversation:
    """The single chat with ``peer`` (one deterministic id), created on its first message.
    D2: between two enterprise accounts of one organisation it is that organisation's."""
    caller = _user(conn)
    accounts = await ctx.enterprise.accounts_of([caller, req.peer])
    conv_id = policy.direct_conversation_of(caller, req.peer, accounts)
    conversation = await ctx.conversations(conv_id).get_conversation(conv_id)
    if conversation is None:
        peer = await ctx.stores.personal.get_user(req.peer)
        policy.may_open_direct(peer_exists=policy.exists(peer))
        new = _new_direct(ctx, conv_id, caller, req.peer)
        conversation = Conversation(
            conv_id=conv_id,
            kind=new.kind,
            title="",
            owner_id=None,
            created_at=ctx.clock.now_ms(),
            member_limit=new.member_limit,
            member_count=len(new.members),
        )
    return replies.Conversation(conv=conversation_info(conversation))


def _user(conn: Connection) -> int:
    assert conn.user_id is not None
    return conn.user_id
