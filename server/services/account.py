"""Personal account deletion (A1)."""

from __future__ import annotations

from protocol import account as pa
from protocol.replies import Done
from server import policy
from server.connection import Connection
from server.context import Context


async def delete(ctx: Context, conn: Connection, req: pa.AccountDelete) -> Done:
    """A1, with its decisions: a member leaves their organisations first, and group owners
    hand their groups over first; then the account is deleted and erased by a job."""
    user = conn.user_id
    assert user is not None
    owned_with_others = []
    # A personal account is never in an organisation's conversations (D2): cross only.
    for member in await ctx.stores.cross.memberships(user):
        if member.active and member.role == "owner":
            conversation = await ctx.stores.cross.get_conversation(member.conv_id)
            if conversation is not None and conversation.member_count > 1:
                owned_with_others.append(member.conv_id)
    policy.may_delete_account(
        org_ids=[m.org_id for m in await ctx.stores.orgs.orgs_of(user)],
        owned_groups=owned_with_others,
    )
    await ctx.eraser.begin(user, reason="account deleted")
    return Done()
