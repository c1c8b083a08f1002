"""Enterprise accounts (P5): creating them, logging in, their status, login records,
real-person verification (O3) and information-security controls (O1).

An enterprise account is an ordinary user row in the personal store (phone placeholder
``ent:<org>:<account>``, see ``storage.enterprise``) plus the organisation's
``EnterpriseAccount`` record. The organisation's admins with ``members`` manage it, its
contact phone number included (where its DING SMS and calls go, G1: the organisation's
data, D2, shown only in the account info admins and the account itself read); each of
their acts is in the organisation's audit log (P3). Disabling, banning, cancelling or
freezing an account revokes its tokens and closes its connections (4005).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import trio

from protocol import enterprise as pe
from protocol import replies
from protocol.errors import CloseCode, ErrorCode, ProtocolError
from protocol.ids import conversation_kind
from protocol.requests import Content
from server import policy
from server.auth.passwords import hash_password, verify_password
from server.bus import Disconnect
from server.connection import Connection
from server.context import Context
from server.services import orgs, session
from storage.enterprise import EnterpriseAccount, placeholder_phone
from storage.errors import AlreadyExists
from storage.orgs import OrgMember

#: Checked against when the account does not exist, so a wrong name costs the same time as
#: a wrong password and does not tell which accounts exist.
_dummy_hash: str | None = None


async def _absent_account_hash() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = await trio.to_thread.run_sync(hash_password, "rivet: no such account")
    return _dummy_hash


def account_info(account: EnterpriseAccount) -> pe.AccountInfo:
    return pe.AccountInfo(
        org=account.org_id,
        account=account.account,
        user=account.user_id,
        status=account.status,
        person_verified=account.person_verified,
        controls=sorted(account.controls),
        created_at=account.created_at,
        phone=account.phone,
    )


def _user(conn: Connection) -> int:
    assert conn.user_id is not None
    return conn.user_id


async def _admin(ctx: Context, conn: Connection, org_id: int) -> OrgMember:
    await orgs._org(ctx, org_id)
    return policy.may_manage_accounts(await ctx.stores.orgs.get_member(org_id, _user(conn)))


async def _target(ctx: Context, org_id: int, user_id: int) -> EnterpriseAccount:
    return policy.account_in_org(await ctx.stores.orgs.account_of_user(user_id), org_id)


async def _changed(ctx: Context, before: EnterpriseAccount, after: EnterpriseAccount) -> None:
    """Drop the cached record; end the sessions of an account that was disabled, banned,
    cancelled or frozen."""
    ctx.enterprise.invalidate(after.user_id)
    if policy.closes_connections(before, after):
        await ctx.stores.personal.bump_token_generation(after.user_id)
        ctx.bus.publish(
            [after.user_id],
            Disconnect(code=CloseCode.ACCOUNT_SUSPENDED, reason="account disabled or frozen"),
        )


async def create_account(
    ctx: Context, conn: Connection, req: pe.OrgAccountCreate
) -> pe.AccountResult:
    """P5: only a verified organisation, by an admin with ``members``. The account joins the
    organisation as a member at once: it is the organisation's own identity."""
    org = await orgs._org(ctx, req.org)
    admin = policy.may_create_account(await ctx.stores.orgs.get_member(req.org, _user(conn)), org)
    if await ctx.stores.orgs.get_account(req.org, req.account) is not None:
        raise ProtocolError(ErrorCode.INVALID_STATE, "the organisation has an account of that name")
    password_hash = await trio.to_thread.run_sync(hash_password, req.password)
    user = await ctx.credentials.create_user(
        ctx.stores,
        phone=placeholder_phone(req.org, req.account),
        display_name=req.display_name or req.account,
    )
    now = ctx.clock.now_ms()
    try:
        account = await ctx.stores.orgs.create_account(
            req.org,
            account=req.account,
            user_id=user.user_id,
            password_hash=password_hash,
            now=now,
            phone=req.phone,
        )
    except AlreadyExists:
        raise ProtocolError(
            ErrorCode.INVALID_STATE, "the organisation has an account of that name"
        ) from None
    ctx.enterprise.invalidate(user.user_id)
    with contextlib.suppress(AlreadyExists):
        await ctx.stores.orgs.add_member(
            req.org, user.user_id, role="member", disclosure=org.disclosure, now=now
        )
    ctx.org_index.invalidate(user.user_id)
    await orgs._admin_act(ctx, admin, "account.create", f"user:{user.user_id}:{req.account}")
    return pe.AccountResult(account=account_info(account))


async def login(ctx: Context, conn: Connection, req: pe.LoginEnterprise) -> replies.Tokens:
    """Organisation + account name + password. Every attempt on an existing account is
    recorded for its admins, refused or not. A wrong organisation, name or password is
    ``auth_failed`` alike; a right password on a refused account says why."""
    if conn.authenticated:
        raise ProtocolError(ErrorCode.ALREADY_HANDSHAKEN)
    org = await ctx.stores.orgs.get_org(req.org)
    account = None
    if org is not None and org.dissolving_at is None:
        account = await ctx.stores.orgs.get_account(req.org, req.account)
    stored = account.password_hash if account is not None else await _absent_account_hash()
    matches = await trio.to_thread.run_sync(verify_password, stored, req.password)
    now = ctx.clock.now_ms()
    if account is None or not matches:
        if account is not None:
            await ctx.stores.orgs.record_login(
                req.org, account.user_id, ok=False, reason="wrong_password", now=now
            )
        raise ProtocolError(ErrorCode.AUTH_FAILED, "wrong organisation, account or password")
    refusal = policy.login_refusal(account)
    user = await ctx.stores.personal.get_user(account.user_id)
    if refusal is None and user is not None and user.suspended:
        conn.close_soon(CloseCode.ACCOUNT_SUSPENDED, "account suspended")
        refusal = "suspended", ProtocolError(ErrorCode.FORBIDDEN, "account suspended")
    if refusal is not None:
        reason, error = refusal
        await ctx.stores.orgs.record_login(
            req.org, account.user_id, ok=False, reason=reason, now=now
        )
        raise error
    if user is None:
        raise ProtocolError(ErrorCode.AUTH_FAILED, "wrong organisation, account or password")
    device = await ctx.stores.personal.register_device(
        user_id=user.user_id, name=req.device_name, now=now
    )
    tokens = await ctx.credentials.issue(ctx.stores, user, device)
    await session._bind(ctx, conn, user, device)
    await ctx.stores.orgs.record_login(req.org, account.user_id, ok=True, reason="", now=now)
    return ctx.credentials.tokens_reply(tokens, session._session(ctx, conn))


async def set_status(ctx: Context, conn: Connection, req: pe.OrgAccountStatus) -> pe.AccountResult:
    admin = await _admin(ctx, conn, req.org)
    account = await _target(ctx, req.org, req.user)
    policy.may_set_account_status(account, req.status)
    updated = await ctx.stores.orgs.set_account_status(req.org, req.user, status=req.status)
    await _changed(ctx, account, updated)
    await orgs._admin_act(ctx, admin, "account.status", f"user:{req.user}:{req.status}")
    return pe.AccountResult(account=account_info(updated))


async def logins(ctx: Context, conn: Connection, req: pe.OrgAccountLogins) -> pe.LoginRecords:
    admin = await _admin(ctx, conn, req.org)
    await _target(ctx, req.org, req.user)
    records = await ctx.stores.orgs.login_records(req.org, req.user, limit=req.limit)
    await orgs._admin_act(ctx, admin, "account.logins", f"user:{req.user}")
    return pe.LoginRecords(
        org=req.org,
        user=req.user,
        records=[pe.LoginRecordInfo(ts=r.ts, ok=r.ok, reason=r.reason) for r in records],
    )


async def verify_person(
    ctx: Context, conn: Connection, req: pe.OrgAccountVerifyPerson
) -> pe.AccountResult:
    """O3: an admin removes the verification; verifying asks the verifier (by default the
    operator's command is the only way, so this is refused)."""
    admin = await _admin(ctx, conn, req.org)
    account = await _target(ctx, req.org, req.user)
    if req.verified:
        policy.may_verify_person(verifier_says=await ctx.enterprise.verifier.verify(account))
    updated = await ctx.stores.orgs.set_person_verified(req.org, req.user, verified=req.verified)
    await _changed(ctx, account, updated)
    action = "account.verify_person" if req.verified else "account.unverify_person"
    await orgs._admin_act(ctx, admin, action, f"user:{req.user}")
    return pe.AccountResult(account=account_info(updated))


async def unverify_self(
    ctx: Context, conn: Connection, req: pe.EnterpriseUnverifySelf
) -> pe.AccountResult:
    """O3: the account itself removes its real-person verification."""
    account = await ctx.stores.orgs.account_of_user(_user(conn))
    if account is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "you are not an enterprise account")
    updated = await ctx.stores.orgs.set_person_verified(
        account.org_id, account.user_id, verified=False
    )
    await _changed(ctx, account, updated)
    return pe.AccountResult(account=account_info(updated))


async def set_controls(
    ctx: Context, conn: Connection, req: pe.OrgAccountControls
) -> pe.AccountResult:
    """O1: replace the account's controls; freezing closes its connections."""
    admin = await _admin(ctx, conn, req.org)
    account = await _target(ctx, req.org, req.user)
    controls = frozenset(req.controls)
    updated = await ctx.stores.orgs.set_controls(req.org, req.user, controls=controls)
    await _changed(ctx, account, updated)
    target = f"user:{req.user}:{','.join(sorted(controls))}"
    await orgs._admin_act(ctx, admin, "account.controls", target)
    return pe.AccountResult(account=account_info(updated))


async def set_phone(ctx: Context, conn: Connection, req: pe.OrgAccountPhone) -> pe.AccountResult:
    """G1 with P5: set or clear the contact number the account's DING SMS and calls go to
    (E.164, checked by the protocol type). The audit entry says whether it was set or
    cleared, not the number."""
    admin = await _admin(ctx, conn, req.org)
    account = await _target(ctx, req.org, req.user)
    updated = await ctx.stores.orgs.set_account_phone(req.org, req.user, phone=req.phone)
    await _changed(ctx, account, updated)
    change = "set" if req.phone is not None else "cleared"
    await orgs._admin_act(ctx, admin, "account.phone", f"user:{req.user}:{change}")
    return pe.AccountResult(account=account_info(updated))


# --- the gates the other services call (O1, O3) --------------------------------------------


async def check_send(ctx: Context, caller: int, conv_id: str, content: Content) -> None:
    """O1 and O3 for a message: the sender's controls; a single chat with an outsider in
    both directions; a group with outsiders for an enterprise sender."""
    sender = await ctx.enterprise.account_of(caller)
    has_file = content.file is not None
    if conversation_kind(conv_id) == "group":
        if sender is None:
            return
        members = await ctx.members.member_ids(conv_id)
        others = [await ctx.enterprise.account_of(m) for m in members if m != caller]
        policy.may_send_as(sender, has_file=has_file, others=others)
        return
    peer = policy.direct_peer(caller, conv_id)
    if peer == caller:
        policy.may_send_as(sender, has_file=has_file, others=[])
        return
    policy.may_chat_directly(sender, await ctx.enterprise.account_of(peer), has_file=has_file)


async def check_group(ctx: Context, members: Iterable[int], *, joining: Iterable[int]) -> None:
    """O3 for creating a group (everyone joins) or adding to one."""
    accounts = {m: await ctx.enterprise.account_of(m) for m in members}
    if any(a is not None for a in accounts.values()):
        policy.may_form_group(accounts, joining=frozenset(joining))


async def check_contact(ctx: Context, caller: int, target: int) -> None:
    """O1 (no new contacts) and O3, both directions, for adding or accepting a contact."""
    policy.may_add_contact(
        await ctx.enterprise.account_of(caller), await ctx.enterprise.account_of(target)
    )
