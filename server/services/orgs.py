"""Organisations and joining (P2-P4, O5) and consent (D4).

Joining always needs both sides (P4): an admin invites and the user accepts; a user applies
and an admin approves; a member invites, an admin approves and the user accepts. The
disclosure (O5) travels with every request and is recorded with the acceptance. Accepting
never grants consent: only ``consent.set`` does, by the user alone (D4).
"""

from __future__ import annotations

import hashlib
import hmac

import trio

from protocol import ding as pd
from protocol import orgs as po
from protocol.errors import ErrorCode, ProtocolError
from protocol.ids import org_conversation_prefix
from protocol.replies import Done
from server import policy
from server.connection import Connection
from server.context import Context
from server.ding.quota import PACKAGE_PERIOD, package_account
from server.org_membership import end_membership
from server.services.render import fingerprint
from storage.errors import AlreadyExists
from storage.orgs import JoinRequest, Organisation, OrgMember, RequestStatus
from storage.records import IdempotencyKey


def _org_info(org: Organisation) -> po.OrgInfo:
    return po.OrgInfo(
        org=org.org_id,
        name=org.name,
        disclosure=org.disclosure,
        verified=org.verified,
        created_at=org.created_at,
    )


def _request_info(request: JoinRequest) -> po.JoinRequestInfo:
    return po.JoinRequestInfo(
        org=request.org_id,
        request_id=request.request_id,
        user=request.user_id,
        kind=request.kind,
        inviter=request.inviter,
        status=request.status,
        disclosure=request.disclosure,
        note=request.note,
        updated_at=request.updated_at,
    )


def _user(conn: Connection) -> int:
    assert conn.user_id is not None
    return conn.user_id


async def _org(ctx: Context, org_id: int) -> Organisation:
    org = await ctx.stores.orgs.get_org(org_id)
    if org is None or org.dissolving_at is not None:
        raise policy.org_not_found()
    return org


async def create(ctx: Context, conn: Connection, req: po.OrgCreate) -> po.OrgResult:
    """P3: the creator becomes the primary admin. Idempotent by (creator, name): a resend
    returns the organisation the first request created."""
    caller = _user(conn)
    for membership in await ctx.stores.orgs.orgs_of(caller):
        existing = await ctx.stores.orgs.get_org(membership.org_id)
        if existing and membership.role == "primary" and existing.name == req.name:
            return po.OrgResult(org=_org_info(existing))
    org = await ctx.stores.orgs.create_org(
        name=req.name, disclosure=req.disclosure, creator=caller, now=ctx.clock.now_ms()
    )
    ctx.org_index.invalidate(caller)
    return po.OrgResult(org=_org_info(org))


async def get(ctx: Context, conn: Connection, req: po.OrgGet) -> po.OrgResult:
    """Public facts about an organisation (name, verification, disclosure), so a user can
    decide whether to join."""
    return po.OrgResult(org=_org_info(await _org(ctx, req.org)))


async def mine(ctx: Context, conn: Connection, req: po.OrgMine) -> po.Memberships:
    out = []
    for m in await ctx.stores.orgs.orgs_of(_user(conn)):
        org = await _org(ctx, m.org_id)
        out.append(
            po.Membership(
                org=m.org_id,
                name=org.name,
                role=m.role,
                permissions=sorted(m.permissions),
                joined_at=m.joined_at,
            )
        )
    return po.Memberships(orgs=out)


async def invite(ctx: Context, conn: Connection, req: po.OrgInvite) -> po.JoinRequestResult:
    caller = _user(conn)
    org = await _org(ctx, req.org)
    inviter = await ctx.stores.orgs.get_member(req.org, caller)
    kind, status = policy.invitation_kind(inviter)
    if not policy.exists(await ctx.stores.personal.get_user(req.user)):
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")
    await _not_a_member(ctx, req.org, req.user)
    pending = await _pending_request(ctx, req.org, req.user)
    if pending is not None:
        return po.JoinRequestResult(request=_request_info(pending))
    request = await ctx.stores.orgs.create_request(
        req.org,
        user_id=req.user,
        kind=kind,
        inviter=caller,
        status=status,
        disclosure=org.disclosure,
        note=req.note,
        now=ctx.clock.now_ms(),
    )
    if kind == "invite":
        await _admin_act(ctx, inviter, "invite", f"user:{req.user}")
    await _notify(ctx, request)
    return po.JoinRequestResult(request=_request_info(request))


async def apply(ctx: Context, conn: Connection, req: po.OrgApply) -> po.JoinRequestResult:
    caller = _user(conn)
    org = await _org(ctx, req.org)
    policy.may_join_org(await ctx.enterprise.account_of(caller), req.org)  # O1
    await _not_a_member(ctx, req.org, caller)
    pending = await _pending_request(ctx, req.org, caller)
    if pending is not None:
        return po.JoinRequestResult(request=_request_info(pending))
    request = await ctx.stores.orgs.create_request(
        req.org,
        user_id=caller,
        kind="apply",
        inviter=caller,
        status="pending_admin",
        disclosure=org.disclosure,
        note=req.note,
        now=ctx.clock.now_ms(),
    )
    await _notify(ctx, request)
    return po.JoinRequestResult(request=_request_info(request))


async def review(ctx: Context, conn: Connection, req: po.OrgReview) -> po.JoinRequestResult:
    """An admin answers an application (the applicant's yes was the application itself, made
    after seeing the disclosure) or approves a member's invitation (the user still answers)."""
    caller = _user(conn)
    await _org(ctx, req.org)
    reviewer = await ctx.stores.orgs.get_member(req.org, caller)
    request = policy.may_review(
        reviewer, await ctx.stores.orgs.get_request(req.org, req.request_id)
    )
    if req.approve and not policy.exists(await ctx.stores.personal.get_user(request.user_id)):
        # A1: the applicant deleted their account since (allowed: not a member yet).
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")
    if req.approve and request.kind == "apply":
        # O1: approving an application is the moment the applicant joins, so a control set
        # since they applied (no_join_orgs) refuses it, as ``answer`` does for invitations
        # (found by the organisation fuzz test: checked at ``apply`` only, it was bypassed).
        policy.may_join_org(await ctx.enterprise.account_of(request.user_id), req.org)
    now = ctx.clock.now_ms()
    status: RequestStatus
    if not req.approve:
        status = "declined"
    elif request.kind == "apply":
        status = "accepted"
    else:
        status = "pending_user"
    updated = await ctx.stores.orgs.set_request_status(
        req.org,
        req.request_id,
        expect="pending_admin",
        status=status,
        now=now,
    )
    if updated is None:
        raise ProtocolError(ErrorCode.INVALID_STATE, "the request was answered meanwhile")
    if status == "accepted":
        await _admit(ctx, updated)
    await _admin_act(
        ctx, reviewer, "approve" if req.approve else "decline", f"request:{req.request_id}"
    )
    await _notify(ctx, updated)
    return po.JoinRequestResult(request=_request_info(updated))


async def answer(ctx: Context, conn: Connection, req: po.OrgAnswer) -> po.JoinRequestResult:
    """The invited user says yes (recording the disclosure they were shown, O5) or no."""
    caller = _user(conn)
    await _org(ctx, req.org)
    request = policy.may_answer(caller, await ctx.stores.orgs.get_request(req.org, req.request_id))
    if req.accept:
        policy.may_join_org(await ctx.enterprise.account_of(caller), req.org)  # O1
    status: RequestStatus = "accepted" if req.accept else "declined"
    updated = await ctx.stores.orgs.set_request_status(
        req.org, request.request_id, expect="pending_user", status=status, now=ctx.clock.now_ms()
    )
    if updated is None:
        raise ProtocolError(ErrorCode.INVALID_STATE, "the request was answered meanwhile")
    if req.accept:
        await _admit(ctx, updated)
    await _notify(ctx, updated)
    return po.JoinRequestResult(request=_request_info(updated))


async def requests(ctx: Context, conn: Connection, req: po.OrgRequests) -> po.JoinRequests:
    caller = _user(conn)
    await _org(ctx, req.org)
    member = await ctx.stores.orgs.get_member(req.org, caller)
    if member is not None and member.may("members"):
        found = await ctx.stores.orgs.list_requests(req.org)
    else:
        found = await ctx.stores.orgs.list_requests(req.org, user_id=caller)
    return po.JoinRequests(requests=[_request_info(r) for r in found])


async def leave(ctx: Context, conn: Connection, req: po.OrgLeave) -> Done:
    """Leaving stops new copies at once (D4); copies made before stay with the organisation."""
    caller = _user(conn)
    await _org(ctx, req.org)
    policy.may_leave_org(await ctx.stores.orgs.get_member(req.org, caller))
    policy.may_leave_own_org(await ctx.stores.orgs.account_of_user(caller), req.org)  # P5
    await _end_membership(ctx, req.org, caller, now=ctx.clock.now_ms())
    ctx.org_index.invalidate(caller)
    ctx.org_feeds.drop_user(req.org, caller)
    return Done()


async def remove(ctx: Context, conn: Connection, req: po.OrgRemove) -> Done:
    caller = _user(conn)
    await _org(ctx, req.org)
    admin = await ctx.stores.orgs.get_member(req.org, caller)
    policy.may_remove_member(admin, await ctx.stores.orgs.get_member(req.org, req.user))
    policy.may_remove_from_org(await ctx.stores.orgs.account_of_user(req.user), req.org)  # P5
    await _end_membership(ctx, req.org, req.user, now=ctx.clock.now_ms())
    ctx.org_index.invalidate(req.user)
    ctx.org_feeds.drop_user(req.org, req.user)
    await _admin_act(ctx, admin, "remove", f"user:{req.user}")
    return Done()


async def _end_membership(ctx: Context, org_id: int, user_id: int, *, now: int) -> None:
    await end_membership(ctx.stores, org_id, user_id, now=now)


async def members(ctx: Context, conn: Connection, req: po.OrgMembers) -> po.OrgMemberPage:
    await _org(ctx, req.org)
    policy.may_see_members(await ctx.stores.orgs.get_member(req.org, _user(conn)))
    rows = await ctx.stores.orgs.list_members(req.org, after_user=req.after_user, limit=req.limit)
    return po.OrgMemberPage(
        org=req.org,
        members=[
            po.OrgMemberInfo(
                user=m.user_id,
                role=m.role,
                permissions=sorted(m.permissions),
                joined_at=m.joined_at,
            )
            for m in rows
        ],
        next_after=rows[-1].user_id if len(rows) == req.limit else None,
    )


async def set_admin(ctx: Context, conn: Connection, req: po.OrgSetAdmin) -> Done:
    """P3: sub-admins with permissions."""
    caller = _user(conn)
    await _org(ctx, req.org)
    admin = await ctx.stores.orgs.get_member(req.org, caller)
    policy.may_set_admin(admin, await ctx.stores.orgs.get_member(req.org, req.user))
    permissions = frozenset(req.permissions) if req.role == "admin" else frozenset()
    await ctx.stores.orgs.set_role(req.org, req.user, role=req.role, permissions=permissions)
    if "audit" not in permissions:
        ctx.org_feeds.drop_user(req.org, req.user)
    target = f"user:{req.user}:{req.role}:{','.join(sorted(permissions))}"
    await _admin_act(ctx, admin, "set_admin", target, permission="admins")
    return Done()


DISSOLVE_TOKEN_SECONDS = 10 * 60


def _dissolve_token(ctx: Context, org_id: int, expires_at: int) -> str:
    mac = hmac.new(
        ctx.credentials.ref_key, f"dissolve:{org_id}:{expires_at}".encode(), hashlib.sha256
    )
    return f"{expires_at}.{mac.hexdigest()}"


async def dissolve(ctx: Context, conn: Connection, req: po.OrgDissolve) -> po.DissolutionSummary:
    """O4, step one: say what would be deleted; delete nothing."""
    caller = _user(conn)
    org = await _org(ctx, req.org)
    policy.may_dissolve(await ctx.stores.orgs.get_member(req.org, caller))
    summary = await ctx.stores.orgs.summary(req.org)
    expires_at = ctx.clock.now_ms() + DISSOLVE_TOKEN_SECONDS * 1000
    conversations = await ctx.stores.org_conversations.count_conversations(
        org_conversation_prefix(req.org)
    )
    return po.DissolutionSummary(
        org=req.org,
        name=org.name,
        members=summary.members,
        copies=summary.copies,
        requests=summary.requests,
        audit_entries=summary.audit_entries,
        token=_dissolve_token(ctx, req.org, expires_at),
        expires_at=expires_at,
        conversations=conversations,
        enterprise_accounts=await _count_accounts(ctx, req.org),
    )


async def _count_accounts(ctx: Context, org_id: int) -> int:
    """P5: the organisation's enterprise accounts, whatever their status."""
    count, after = 0, ""
    while page := await ctx.stores.orgs.list_accounts(org_id, after_account=after, limit=500):
        count += len(page)
        after = page[-1].account
    return count


async def confirm_dissolve(ctx: Context, conn: Connection, req: po.OrgDissolveConfirm) -> Done:
    """O4, step two: the organisation is gone for every path now; its store is deleted by
    the resumable job (``server.dissolution``)."""
    caller = _user(conn)
    await _org(ctx, req.org)
    policy.may_dissolve(await ctx.stores.orgs.get_member(req.org, caller))
    expires_text, _, _mac = req.token.partition(".")
    now = ctx.clock.now_ms()
    valid = expires_text.isdigit() and hmac.compare_digest(
        req.token, _dissolve_token(ctx, req.org, int(expires_text))
    )
    if not valid or int(expires_text) <= now:
        raise ProtocolError(ErrorCode.INVALID_FIELD, "invalid or expired token", path="$.token")
    members: list[int] = []
    after = 0
    while page := await ctx.stores.orgs.list_members(req.org, after_user=after, limit=500):
        members.extend(m.user_id for m in page)
        after = page[-1].user_id
    await ctx.stores.orgs.mark_dissolving(req.org, now=now)
    for user_id in members:
        ctx.org_index.invalidate(user_id)
        ctx.org_feeds.drop_user(req.org, user_id)
    ctx.dissolver.kick()
    return Done()


async def set_consent(ctx: Context, conn: Connection, req: po.ConsentSet) -> po.ConsentState:
    """D4: consent per organisation, by the user alone, recorded with its time in the
    personal domain. It applies to messages committed from that moment."""
    caller = _user(conn)
    await _org(ctx, req.org)
    member = await ctx.stores.orgs.get_member(req.org, caller)
    if req.granted and (member is None or not member.active):
        # Consent counts only within a membership (policy.may_copy); revoking is always fine.
        raise ProtocolError(ErrorCode.NOT_MEMBER, "join the organisation before consenting")
    change = await ctx.stores.consent.set_consent(
        user_id=caller, org_id=req.org, granted=req.granted, now=ctx.clock.now_ms()
    )
    return po.ConsentState(org=req.org, granted=change.granted, at=change.at)


async def list_consents(ctx: Context, conn: Connection, req: po.ConsentList) -> po.Consents:
    caller = _user(conn)
    states = []
    for org_id, _granted in sorted((await ctx.stores.consent.consents_of(caller)).items()):
        history = await ctx.stores.consent.consent_history(caller, org_id)
        last = history[-1]
        states.append(po.ConsentState(org=org_id, granted=last.granted, at=last.at))
    return po.Consents(consents=states)


async def ding_topup(ctx: Context, conn: Connection, req: pd.OrgDingTopup) -> pd.DingQuota:
    """G2: an admin buys DING units for the organisation's package; logged as the
    organisation's act (P3). Idempotent by ``cmid``, as ``msg.send`` and ``contacts.add``
    are: a resend after a lost reply adds nothing (and is not logged again) and answers with
    the package as it is now; the same ``cmid`` for another top-up is
    ``idempotency_conflict``."""
    caller = _user(conn)
    await _org(ctx, req.org)
    admin = policy.may_manage_ding_package(await ctx.stores.orgs.get_member(req.org, caller))
    key = IdempotencyKey(
        sender=caller,
        client_id="t:" + req.cmid,
        fingerprint=fingerprint(str(req.org), req.channel, str(req.units)),
    )
    with trio.CancelScope(shield=True):  # a top-up that may have committed gets its audit
        # D2/G2: an organisation's package lives in the organisation DING store.
        topped = await ctx.stores.org_ding.top_up(
            package_account(req.org), req.channel, PACKAGE_PERIOD, units=req.units, idempotency=key
        )
        if not topped.duplicate:
            await _admin_act(ctx, admin, "ding_topup", f"ding:{req.channel}:{req.units}")
    return await _ding_quota(ctx, req.org)


async def ding_quota(ctx: Context, conn: Connection, req: pd.OrgDingQuota) -> pd.DingQuota:
    """G2: what is left of the organisation's DING package, and each member's use."""
    await _org(ctx, req.org)
    policy.may_manage_ding_package(await ctx.stores.orgs.get_member(req.org, _user(conn)))
    return await _ding_quota(ctx, req.org)


async def _ding_quota(ctx: Context, org_id: int) -> pd.DingQuota:
    packages = []
    channels: tuple[pd.PaidChannel, ...] = ("sms", "call")
    for channel in channels:
        balance = await ctx.stores.org_ding.quota_balance(
            package_account(org_id), channel, PACKAGE_PERIOD
        )
        granted, used = (0, 0) if balance is None else (balance.granted, balance.used)
        members = {} if balance is None else balance.by_member
        packages.append(
            pd.DingPackage(
                channel=channel,
                granted=granted,
                used=used,
                remaining=max(granted - used, 0),
                members=[pd.DingMemberUse(user=u, used=n) for u, n in sorted(members.items())],
            )
        )
    return pd.DingQuota(org=org_id, packages=packages)


# --- helpers -----------------------------------------------------------------------------------


async def _pending_request(ctx: Context, org_id: int, user_id: int) -> JoinRequest | None:
    """A request for this user still waiting for someone: asking again returns it, so
    invitations and applications are safe to retry."""
    for request in await ctx.stores.orgs.list_requests(org_id, user_id=user_id):
        if request.status in ("pending_user", "pending_admin"):
            return request
    return None


async def _not_a_member(ctx: Context, org_id: int, user_id: int) -> None:
    existing = await ctx.stores.orgs.get_member(org_id, user_id)
    if existing is not None and existing.active:
        raise ProtocolError(ErrorCode.ALREADY_MEMBER)


async def _admit(ctx: Context, request: JoinRequest) -> None:
    try:
        await ctx.stores.orgs.add_member(
            request.org_id,
            request.user_id,
            role="member",
            disclosure=request.disclosure,
            now=ctx.clock.now_ms(),
        )
    except AlreadyExists:
        raise ProtocolError(ErrorCode.ALREADY_MEMBER) from None
    ctx.org_index.invalidate(request.user_id)


async def _admin_act(
    ctx: Context, admin: OrgMember | None, action: str, target: str, *, permission: str = "members"
) -> None:
    """P3: what an admin does counts as the organisation's act and is logged."""
    view = policy.admin_view(
        admin, permission, store=ctx.stores.orgs, clock=ctx.clock, feeds=ctx.org_feeds
    )
    await view.record(action, target)


async def _notify(ctx: Context, request: JoinRequest) -> None:
    """Tell whoever the request waits for: the user, or the admins who handle members."""
    event = po.OrgRequestEvent(request=_request_info(request))
    if request.status == "pending_user":
        ctx.publish([request.user_id], event)
    elif request.status == "pending_admin":
        admins: list[int] = []
        after = 0
        while True:
            page = await ctx.stores.orgs.list_members(request.org_id, after_user=after, limit=500)
            admins.extend(m.user_id for m in page if m.may("members"))
            if len(page) < 500:
                break
            after = page[-1].user_id
        ctx.publish(admins, event)
    else:
        # Decided: the person who asked (the inviter, or the applicant) and the user.
        ctx.publish({request.inviter, request.user_id}, event)
