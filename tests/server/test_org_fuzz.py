"""Property-based test of the organisation lifecycle and its controls (P2-P5, O1-O5, D4,
``docs/domains.md``) through the router (no network, sealed stores as the server runs
them, a ``ManualClock``).

Six users: 0-3 are personal (0 is the primary admin of X, 3 of Y), 4 and 5 are X's
enterprise accounts (X is verified by the operator at the start, and so is the person
behind account 4). Hypothesis draws
sequences of: organisation creation (idempotent by creator and name), invitations,
applications, reviews and answers (P4, the disclosure recorded, O5), leaving, removal,
sub-admins (P3), ``consent.set`` (D4), single chats (cross-domain, chat with oneself, and
X's own ``o:X:d:...`` chat between its accounts), cross-domain groups, contact requests,
the enterprise accounts' controls (O1, freezing included), status, real-person verification
given by a scripted verifier and removed by an admin or the account itself (O3), logins
again after a session ended, admin recall and hide of copies (O1, O2), relay runs,
dissolution with its confirmation step (a good, stale or forged token) and the job that
carries it out (O4), and a clock jump of eleven minutes (the token's life is ten). Every op
moves the clock by 0 or 1 ms, so ties in one millisecond happen.

A model decides every reply, error code included (policy order: the organisation and the
caller's membership first, then the permission, then the target). After each op:

* a refused op changed nothing: every organisation's rows (members, requests, accounts,
  copies, audit log), every consent history, every contact row and every conversation's
  last seq are what they were before it;
* each organisation's members (role, permissions, the disclosure they accepted, O5), join
  requests and enterprise accounts (status, verification, controls) are the model's; a
  dissolved organisation is gone from the store, its own conversations with it;
* each live organisation's admin export holds exactly the copies the consent rule allows
  (D4: a member's own message at a time they were a member and had consented in that
  membership; an enterprise account's in its own organisation without consent; nothing for
  an organisation dissolving or gone), each with its member, time and text, hidden and
  recalled as the admins left them; counts agree;
* every conversation holds the model's messages: an admin recall or hide withdraws only a
  message of the organisation's own conversation (O1, O2); a cross-domain one is never
  rewritten by an admin, and stays with its participants after dissolution (O4), where
  only the dissolved organisation's accounts' words are tombstoned (the A1-like erasure);
* a session the model says ended (freezing, disabling, banning, cancelling: 4005;
  dissolution: 4004) was closed by the server, and the account acts again only after a
  login the model allows (a frozen or disabled account cannot act).

No reply is ever ``internal`` (4003). ``RIVET_ORG_FUZZ_EXAMPLES`` sets the number of
examples (60), ``RIVET_ORG_FUZZ_MAX_OPS`` the longest sequence (60; each is at least half
as long) and ``RIVET_ORG_FUZZ_STORE`` the stores (``memory``, or ``sqlite``). The bugs it
found are pinned as ``@example``s and run on both backends.

Not covered here: the real-time audit feed, DING and live controls (``no_ding``,
``no_live``: ``tests/e2e/test_enterprise.py``), group membership changes after
creation, ``contacts.respond``, the operator's organisation verification (P2) and copies'
contents beyond the text (``test_consent_fuzz.py``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, get_args

import hypothesis.strategies as st
import msgspec
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings

from protocol import codec
from protocol import enterprise as pe
from protocol import orgs as po
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from protocol.ids import direct_conversation_id, org_conversation_prefix, org_direct_conversation_id
from server import encryption
from server.clock import ManualClock
from server.config import Config
from server.connection import Connection
from server.router import Router
from storage.enterprise import EnterpriseAccount
from storage.memory import open_memory_stores
from storage.sqlite import open_sqlite_stores
from storage.stores import Stores
from tests.server.cheap_passwords import cheap_passwords
from tests.server.routers import build_router, connect, frames, login

EXAMPLES = int(os.environ.get("RIVET_ORG_FUZZ_EXAMPLES", "60"))
MAX_OPS = int(os.environ.get("RIVET_ORG_FUZZ_MAX_OPS", "60"))
STORE = os.environ.get("RIVET_ORG_FUZZ_STORE", "memory")

FRAME_DEADLINE = 5.0
PASSWORD = "correct horse battery"
PERSONAL = (0, 1, 2, 3)
ACCOUNTS = (4, 5)
USERS = len(PERSONAL) + len(ACCOUNTS)
X, Y = 0, 1
MAX_ORGS = 4
TOKEN_MS = 10 * 60 * 1000
NAMES = ("X", "Y", "Z")
#: O1's controls, less the two only e2e tests cover (``no_ding``, ``no_live``).
CONTROLS = tuple(c for c in get_args(pe.ControlName) if c not in ("no_ding", "no_live"))
PERMISSIONS = ("members", "audit", "export", "moderate", "admins")
FILE = rq.FileRef(ref="f1", name="a.pdf", mime="application/pdf", size=1)

user = st.integers(min_value=0, max_value=USERS - 1)
#: Who acts for an organisation: ``PRIMARY`` (its primary admin, resolved when the op runs)
#: half the time, so admin acts are not drowned in refusals; anyone else otherwise.
PRIMARY = -1
actor = st.one_of(st.just(PRIMARY), user)
#: Who answers an invitation: ``PRIMARY`` here stands for the invited user.
answerer = st.one_of(st.just(PRIMARY), user)
personal = st.sampled_from(PERSONAL)
account = st.sampled_from(ACCOUNTS)
#: X or Y most of the time (an op on an organisation not created yet does nothing).
org = st.one_of(st.just(X), st.just(Y), st.integers(min_value=0, max_value=MAX_ORGS - 1))
#: Enterprise accounts are X's: an account op names X most of the time.
account_org = st.one_of(st.just(X), st.just(X), org)
pick = st.integers(min_value=0, max_value=7)
tick = st.integers(min_value=0, max_value=1)
controls = st.frozensets(st.sampled_from(CONTROLS), max_size=3).map(lambda s: tuple(sorted(s)))
permissions = st.frozensets(st.sampled_from(PERMISSIONS), max_size=3).map(
    lambda s: tuple(sorted(s))
)

_STATUSES = ("active", "disabled", "banned", "cancelled")
#: Each op's strategy (made anew each time: ``one_of`` treats one strategy object listed
#: twice as one branch), with its weight: messages, relay runs, consent changes and joining
#: are what copies are made of, so they are drawn more often.
_OPS: tuple[tuple[int, Callable[[], st.SearchStrategy[tuple[Any, ...]]]], ...] = (
    (3, lambda: st.tuples(st.just("invite"), org, actor, user, tick)),
    (1, lambda: st.tuples(st.just("apply"), org, user, tick)),
    (1, lambda: st.tuples(st.just("review"), org, actor, pick, st.booleans(), tick)),
    (3, lambda: st.tuples(st.just("answer"), org, answerer, pick, st.booleans(), tick)),
    (1, lambda: st.tuples(st.just("leave"), org, user, tick)),
    (1, lambda: st.tuples(st.just("remove"), org, actor, user, tick)),
    (
        1,
        lambda: st.tuples(
            st.just("set_admin"),
            org,
            actor,
            user,
            st.sampled_from(("admin", "member")),
            permissions,
            tick,
        ),
    ),
    (2, lambda: st.tuples(st.just("consent"), org, user, st.booleans(), tick)),
    (4, lambda: st.tuples(st.just("send"), user, user, st.booleans(), tick)),
    (
        1,
        lambda: st.tuples(
            st.just("group"), user, st.frozensets(user, min_size=1, max_size=3), tick
        ),
    ),
    (2, lambda: st.tuples(st.just("gsend"), pick, pick, tick)),
    (1, lambda: st.tuples(st.just("contact"), user, user, tick)),
    (1, lambda: st.tuples(st.just("controls"), account_org, actor, account, controls, tick)),
    (
        1,
        lambda: st.tuples(
            st.just("status"), account_org, actor, account, st.sampled_from(_STATUSES), tick
        ),
    ),
    (
        1,
        lambda: st.tuples(
            st.just("verify"), account_org, actor, account, st.booleans(), st.booleans(), tick
        ),
    ),
    (1, lambda: st.tuples(st.just("unverify_self"), account, tick)),
    (1, lambda: st.tuples(st.just("relogin"), account, tick)),
    (2, lambda: st.tuples(st.just("recall"), org, actor, pick, tick)),
    (2, lambda: st.tuples(st.just("hide"), org, actor, pick, st.booleans(), tick)),
    (3, lambda: st.tuples(st.just("drain"), tick)),
    (1, lambda: st.tuples(st.just("dissolve"), org, actor, tick)),
    (
        1,
        lambda: st.tuples(
            st.just("confirm"), org, actor, st.sampled_from((True, True, False)), tick
        ),
    ),
    (1, lambda: st.tuples(st.just("finish"), tick)),
    (1, lambda: st.tuples(st.just("create"), personal, st.sampled_from(NAMES), tick)),
    (1, lambda: st.tuples(st.just("wait"), tick)),
)
OPS = st.one_of(*(make() for weight, make in _OPS for _ in range(weight)))


# --- the model -----------------------------------------------------------------------------


@dataclass
class Span:
    joined: int
    left: int | None = None
    #: D4: the consent changes made during this membership, in order.
    changes: list[tuple[int, bool]] = field(default_factory=list)

    def covers(self, at: int) -> bool:
        return self.joined <= at and (self.left is None or at < self.left)


@dataclass
class Membership:
    role: str
    permissions: frozenset[str] = frozenset()

    def may(self, permission: str) -> bool:
        return self.role == "primary" or permission in self.permissions


@dataclass
class Request:
    request_id: int
    user: int
    kind: str
    status: str


@dataclass
class Account:
    status: str = "active"
    verified: bool = False
    controls: frozenset[str] = frozenset()


@dataclass
class Message:
    text: str
    sender: int
    ts: int
    conv: str
    seq: int
    #: Model orgs the sender belonged to at commit (``OrgIndex``), by server id order.
    orgs: tuple[int, ...]
    judged: bool = False
    recalled: bool = False


@dataclass
class Copy:
    copy_id: int
    member: int
    ts: int
    text: str
    #: The message it was made from, when that is the organisation's own conversation.
    source: Message | None
    hidden: bool = False
    recalled: bool = False


@dataclass
class Org:
    sid: int
    name: str
    disclosure: str
    members: dict[int, Membership]
    spans: dict[int, list[Span]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    accounts: dict[int, Account] = field(default_factory=dict)
    copies: list[Copy] = field(default_factory=list)
    state: str = "alive"  # alive | dissolving | gone
    token: tuple[str, int] | None = None

    @property
    def alive(self) -> bool:
        return self.state == "alive"

    @property
    def primary(self) -> int:
        return next(u for u, ms in self.members.items() if ms.role == "primary")

    def may(self, who: int, permission: str) -> bool:
        member = self.members.get(who)
        return member is not None and member.may(permission)

    def span(self, who: int) -> Span | None:
        spans = self.spans.get(who, [])
        return spans[-1] if spans and spans[-1].left is None else None

    def admit(self, who: int, now: int, role: str = "member") -> None:
        self.members[who] = Membership(role=role)
        self.spans.setdefault(who, []).append(Span(joined=now))

    def end(self, who: int, now: int) -> None:
        del self.members[who]
        span = self.span(who)
        assert span is not None
        span.left = now

    def pending(self, who: int) -> Request | None:
        for request in self.requests:
            if request.user == who and request.status in ("pending_user", "pending_admin"):
                return request
        return None


class Refused(Exception):
    """The model's verdict: the op is refused with ``code``."""

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.name)
        self.code = code


def outsider(me: int, other: int, accounts: dict[int, Account]) -> bool:
    """O3: to an enterprise account, everyone but its own organisation's accounts."""
    return other not in accounts


@dataclass
class Model:
    orgs: list[Org]
    #: The enterprise accounts (all X's), by user index.
    accounts: dict[int, Account]
    messages: list[Message] = field(default_factory=list)
    #: conversation id -> its store ("cross" or "org") and whether it exists.
    convs: dict[str, str] = field(default_factory=dict)
    groups: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    #: Users whose session the server must have ended, with the close code.
    closed: dict[int, int] = field(default_factory=dict)
    #: Accounts whose access token is still good (no closing change since it was issued).
    token_good: dict[int, bool] = field(default_factory=dict)
    erased: set[int] = field(default_factory=set)
    next_sid: int = 3

    def account(self, who: int) -> Account | None:
        if who in self.erased:
            return None
        return self.accounts.get(who)

    def own_org(self, who: int) -> Org | None:
        return self.orgs[X] if who in self.accounts else None

    def orgs_of(self, who: int) -> tuple[int, ...]:
        return tuple(i for i, o in enumerate(self.orgs) if o.alive and who in o.members)

    # O1/O3 (server/policy.py: may_send_as, may_communicate, may_form_group, ...)

    def live_accounts(self) -> dict[int, Account]:
        return {u: a for u, a in self.accounts.items() if u not in self.erased}

    def send_as(self, sender: int, others: list[int], *, has_file: bool) -> None:
        accounts = self.live_accounts()
        mine = accounts.get(sender)
        if mine is None:
            return
        if "no_messages" in mine.controls:
            raise Refused(ErrorCode.MESSAGES_FORBIDDEN)
        if has_file and "no_files" in mine.controls:
            raise Refused(ErrorCode.FILES_FORBIDDEN)
        if any(outsider(sender, o, accounts) for o in others):
            if "no_external_chat" in mine.controls:
                raise Refused(ErrorCode.EXTERNAL_CHAT_FORBIDDEN)
            if not mine.verified:
                raise Refused(ErrorCode.VERIFICATION_REQUIRED)

    def communicate(self, first: int, second: int) -> None:
        accounts = self.live_accounts()
        for me, other in ((first, second), (second, first)):
            mine = accounts.get(me)
            if mine is not None and not mine.verified and outsider(me, other, accounts):
                raise Refused(ErrorCode.VERIFICATION_REQUIRED)

    def form_group(self, members: list[int]) -> None:
        accounts = self.live_accounts()
        for me in members:
            mine = accounts.get(me)
            if mine is None or mine.verified:
                continue
            if any(o != me and outsider(me, o, accounts) for o in members):
                raise Refused(ErrorCode.VERIFICATION_REQUIRED)

    def join_org(self, who: int, target: int) -> None:
        mine = self.account(who)
        if mine is not None and target != X and "no_join_orgs" in mine.controls:
            raise Refused(ErrorCode.JOIN_ORGS_FORBIDDEN)

    # D4 (policy.may_copy), judged at the first relay run after the message

    def allowed(self, msg: Message, index: int) -> bool:
        org = self.orgs[index]
        if not org.alive or msg.recalled:
            return False
        span = next((s for s in org.spans.get(msg.sender, []) if s.covers(msg.ts)), None)
        if span is None:
            return False
        if index == X and msg.sender in self.accounts:
            return True  # D4 decision: an enterprise account's own data is its org's
        state = False
        for at, granted in span.changes:
            if at < msg.ts or (at == msg.ts and not granted):
                state = granted
        return state

    def drain(self) -> None:
        # The relay drains the cross-domain store's effects first, then the organisations'.
        for store in ("cross", "org"):
            for msg in self.messages:
                if msg.judged or self.convs[msg.conv] != store:
                    continue
                msg.judged = True
                for index in msg.orgs:
                    if self.allowed(msg, index):
                        org = self.orgs[index]
                        org.copies.append(
                            Copy(
                                copy_id=len(org.copies) + 1,
                                member=msg.sender,
                                ts=msg.ts,
                                text=msg.text,
                                source=msg if store == "org" else None,
                            )
                        )


class ScriptedVerifier:
    """O3: what the real-person verifier answers next (the operator's check)."""

    def __init__(self) -> None:
        self.answer = False

    async def verify(self, account: EnterpriseAccount) -> bool:
        return self.answer


# --- the driver ----------------------------------------------------------------------------


class Run:
    def __init__(
        self, router: Router, clock: ManualClock, verifier: ScriptedVerifier, model: Model
    ) -> None:
        self.router = router
        self.ctx = router.ctx
        self.clock = clock
        self.verifier = verifier
        self.model = model
        self.conns: list[Connection] = []
        self.ids: list[int] = []
        #: Each account's latest access token and when it was issued.
        self.tokens: dict[int, tuple[str, int]] = {}
        self.rid = 1000
        self.sent = 0

    @property
    def now(self) -> int:
        return self.clock.now_ms()

    async def call(self, actor: int | Connection, request: rq.Request) -> dict[str, Any]:
        self.rid += 1
        request = msgspec.structs.replace(request, rid=self.rid)
        conn = self.conns[actor] if isinstance(actor, int) else actor
        with trio.fail_after(FRAME_DEADLINE):
            await self.router.handle_frame(conn, codec.encode_request(request))
        replies = [f for f in frames(conn) if f["op"] in ("ok", "error")]
        assert len(replies) == 1, replies
        reply = replies[0]
        assert reply.get("rid") == self.rid, reply
        assert reply.get("code") != ErrorCode.INTERNAL, (request, reply)
        return reply

    async def expect(
        self, actor: int | Connection, request: rq.Request, code: ErrorCode | None
    ) -> dict[str, Any]:
        reply = await self.call(actor, request)
        if code is None:
            assert reply["op"] == "ok", (request, reply)
            return dict(reply["result"])
        assert reply["op"] == "error" and reply["code"] == code, (request, code.name, reply)
        return {}

    def acting(self, who: int) -> bool:
        """Whether ``who`` has a session to act with (the gateway reads no more frames from
        a connection the server asked to close)."""
        return who not in self.model.closed

    # --- ops ------------------------------------------------------------------------------

    async def apply(self, op: tuple[Any, ...]) -> ErrorCode | None:
        """Run ``op`` against the server and the model; the model's verdict (None: ok)."""
        kind, args = op[0], list(op[1:-1])
        if len(args) > 1 and args[1] == PRIMARY and kind != "answer":
            # (kind, org, actor, ...): the organisation's primary admin, as it is now.
            org = self._org(args[0])
            if org is None:
                return None
            args[1] = org.primary
        handler = getattr(self, f"op_{kind}")
        result: ErrorCode | None = await handler(*args)
        return result

    def _org(self, index: int) -> Org | None:
        orgs = self.model.orgs
        return orgs[index] if index < len(orgs) else None

    @staticmethod
    def _member(org: Org, who: int) -> None:
        """The organisation and the caller's membership (policy.org_not_found)."""
        if not org.alive or who not in org.members:
            raise Refused(ErrorCode.NOT_FOUND)

    async def _run(
        self, actor: int | Connection, request: rq.Request, verdict: ErrorCode | None
    ) -> dict[str, Any]:
        return await self.expect(actor, request, verdict)

    async def op_invite(self, index: int, inviter: int, who: int) -> ErrorCode | None:
        org = self._org(index)
        if org is None or not self.acting(inviter) or who in self.model.erased:
            return None
        request = po.OrgInvite(rid=0, org=org.sid, user=self.ids[who])
        try:
            self._member(org, inviter)
            if who in org.members:
                raise Refused(ErrorCode.ALREADY_MEMBER)
        except Refused as refused:
            await self.expect(inviter, request, refused.code)
            return refused.code
        result = await self.expect(inviter, request, None)
        pending = org.pending(who)
        if pending is None:
            admin = org.may(inviter, "members")
            pending = Request(
                request_id=len(org.requests) + 1,
                user=who,
                kind="invite" if admin else "member_invite",
                status="pending_user" if admin else "pending_admin",
            )
            org.requests.append(pending)
        assert result["request"]["request_id"] == pending.request_id, (result, pending)
        assert result["request"]["disclosure"] == org.disclosure, result  # O5
        return None

    async def op_apply(self, index: int, who: int) -> ErrorCode | None:
        org = self._org(index)
        if org is None or not self.acting(who):
            return None
        request = po.OrgApply(rid=0, org=org.sid)
        try:
            if not org.alive:
                raise Refused(ErrorCode.NOT_FOUND)
            self.model.join_org(who, index)  # O1
            if who in org.members:
                raise Refused(ErrorCode.ALREADY_MEMBER)
        except Refused as refused:
            await self.expect(who, request, refused.code)
            return refused.code
        result = await self.expect(who, request, None)
        pending = org.pending(who)
        if pending is None:
            pending = Request(len(org.requests) + 1, who, "apply", "pending_admin")
            org.requests.append(pending)
        assert result["request"]["request_id"] == pending.request_id, (result, pending)
        assert result["request"]["disclosure"] == org.disclosure, result  # O5
        return None

    async def op_review(self, index: int, reviewer: int, k: int, approve: bool) -> ErrorCode | None:
        org = self._org(index)
        if org is None or not org.requests or not self.acting(reviewer):
            return None
        waiting = [r for r in org.requests if r.status == "pending_admin"] or org.requests
        target = waiting[k % len(waiting)]
        request = po.OrgReview(rid=0, org=org.sid, request_id=target.request_id, approve=approve)
        try:
            self._member(org, reviewer)
            if not org.may(reviewer, "members"):
                raise Refused(ErrorCode.FORBIDDEN)
            if target.status != "pending_admin":
                raise Refused(ErrorCode.INVALID_STATE)
            if approve and target.kind == "apply":
                self.model.join_org(target.user, index)  # O1, at the moment of joining
        except Refused as refused:
            await self.expect(reviewer, request, refused.code)
            return refused.code
        await self.expect(reviewer, request, None)
        if not approve:
            target.status = "declined"
        elif target.kind == "apply":
            target.status = "accepted"
            org.admit(target.user, self.now)
        else:
            target.status = "pending_user"
        return None

    async def op_answer(self, index: int, who: int, k: int, accept: bool) -> ErrorCode | None:
        org = self._org(index)
        if org is None or not org.requests:
            return None
        # Mostly an invitation that waits for its user (else any request: refused).
        waiting = [r for r in org.requests if r.status == "pending_user"] or org.requests
        target = waiting[k % len(waiting)]
        if who == PRIMARY:
            who = target.user
        if not self.acting(who):
            return None
        request = po.OrgAnswer(rid=0, org=org.sid, request_id=target.request_id, accept=accept)
        try:
            if not org.alive:
                raise Refused(ErrorCode.NOT_FOUND)
            if target.user != who:
                raise Refused(ErrorCode.NOT_FOUND)
            if target.status != "pending_user":
                raise Refused(ErrorCode.INVALID_STATE)
            if accept:
                self.model.join_org(who, index)  # O1
        except Refused as refused:
            await self.expect(who, request, refused.code)
            return refused.code
        result = await self.expect(who, request, None)
        assert result["request"]["disclosure"] == org.disclosure, result  # O5
        target.status = "accepted" if accept else "declined"
        if accept:
            org.admit(who, self.now)
        return None

    def _ending(self, org: Org, index: int, who: int) -> None:
        """P5: an organisation's own enterprise account is bound to it."""
        if index == X and who in self.model.accounts:
            raise Refused(ErrorCode.ENTERPRISE_ACCOUNT_BOUND)

    def _end(self, org: Org, who: int) -> None:
        span = org.span(who)
        assert span is not None
        if span.changes and span.changes[-1][1]:
            # D4: a membership's end revokes a grant in force (services.orgs).
            span.changes.append((self.now, False))
        org.end(who, self.now)

    async def op_leave(self, index: int, who: int) -> ErrorCode | None:
        org = self._org(index)
        if org is None or not self.acting(who):
            return None
        request = po.OrgLeave(rid=0, org=org.sid)
        try:
            self._member(org, who)
            if org.members[who].role == "primary":
                raise Refused(ErrorCode.INVALID_STATE)
            self._ending(org, index, who)
        except Refused as refused:
            await self.expect(who, request, refused.code)
            return refused.code
        await self.expect(who, request, None)
        self._end(org, who)
        return None

    async def op_remove(self, index: int, admin: int, who: int) -> ErrorCode | None:
        org = self._org(index)
        if org is None or not self.acting(admin):
            return None
        request = po.OrgRemove(rid=0, org=org.sid, user=self.ids[who])
        try:
            self._member(org, admin)
            if not org.may(admin, "members"):
                raise Refused(ErrorCode.FORBIDDEN)
            if who not in org.members:
                raise Refused(ErrorCode.NOT_MEMBER)
            if org.members[who].role == "primary":
                raise Refused(ErrorCode.FORBIDDEN)
            self._ending(org, index, who)
        except Refused as refused:
            await self.expect(admin, request, refused.code)
            return refused.code
        await self.expect(admin, request, None)
        self._end(org, who)
        return None

    async def op_set_admin(
        self, index: int, admin: int, who: int, role: str, perms: tuple[str, ...]
    ) -> ErrorCode | None:
        org = self._org(index)
        if org is None or not self.acting(admin):
            return None
        request = po.OrgSetAdmin(
            rid=0,
            org=org.sid,
            user=self.ids[who],
            role=role,  # type: ignore[arg-type]
            permissions=list(perms),  # type: ignore[arg-type]
        )
        try:
            self._member(org, admin)
            if not org.may(admin, "admins"):
                raise Refused(ErrorCode.FORBIDDEN)
            if who not in org.members:
                raise Refused(ErrorCode.NOT_MEMBER)
            if org.members[who].role == "primary":
                raise Refused(ErrorCode.FORBIDDEN)
        except Refused as refused:
            await self.expect(admin, request, refused.code)
            return refused.code
        await self.expect(admin, request, None)
        org.members[who] = Membership(
            role=role, permissions=frozenset(perms) if role == "admin" else frozenset()
        )
        return None

    async def op_consent(self, index: int, who: int, granted: bool) -> ErrorCode | None:
        org = self._org(index)
        if org is None or not self.acting(who):
            return None
        request = po.ConsentSet(rid=0, org=org.sid, granted=granted)
        try:
            if not org.alive:
                raise Refused(ErrorCode.NOT_FOUND)
            if granted and who not in org.members:
                raise Refused(ErrorCode.NOT_MEMBER)
        except Refused as refused:
            await self.expect(who, request, refused.code)
            return refused.code
        result = await self.expect(who, request, None)
        assert result["at"] == self.now, result
        span = org.span(who)
        if span is not None:
            span.changes.append((self.now, granted))
        return None

    def _direct(self, sender: int, peer: int) -> tuple[str, str]:
        """D2/D3: the single chat's id and store (policy.direct_conversation_of)."""
        a, b = self.ids[sender], self.ids[peer]
        if sender == peer:
            return f"s:{a}", "cross"
        accounts = self.model.live_accounts()
        if sender in accounts and peer in accounts:
            return org_direct_conversation_id(self.model.orgs[X].sid, a, b), "org"
        return direct_conversation_id(a, b), "cross"

    async def _message(
        self, sender: int, conv: str, store: str, verdict: ErrorCode | None, *, has_file: bool
    ) -> ErrorCode | None:
        self.sent += 1
        text = f"m{self.sent} from {sender}"
        content = (
            rq.Content(kind="file", text=text, file=FILE) if has_file else rq.Content(text=text)
        )
        request = rq.MsgSend(rid=0, conv=conv, cmid=f"c{self.sent}", content=content)
        result = await self.expect(sender, request, verdict)
        if verdict is None:
            assert result["ts"] == self.now, result
            self.model.convs[conv] = store
            self.model.messages.append(
                Message(
                    text=text,
                    sender=sender,
                    ts=self.now,
                    conv=conv,
                    seq=result["seq"],
                    orgs=self.model.orgs_of(sender),
                )
            )
        return verdict

    async def op_send(self, sender: int, peer: int, has_file: bool) -> ErrorCode | None:
        m = self.model
        if not self.acting(sender) or peer in m.erased:
            return None
        conv, store = self._direct(sender, peer)
        try:
            if sender == peer:
                m.send_as(sender, [], has_file=has_file)
            else:
                m.send_as(sender, [peer], has_file=has_file)
                m.communicate(sender, peer)
        except Refused as refused:
            return await self._message(sender, conv, store, refused.code, has_file=has_file)
        return await self._message(sender, conv, store, None, has_file=has_file)

    async def op_group(self, creator: int, members: frozenset[int]) -> ErrorCode | None:
        m = self.model
        if not self.acting(creator) or members & m.erased or len(m.groups) >= 4:
            return None
        everyone = sorted(members | {creator})
        request = rq.GroupCreate(
            rid=0,
            cmid=f"g{len(m.groups)}-{self.rid}",
            title="team",
            members=[self.ids[u] for u in sorted(members - {creator})],
        )
        try:
            m.form_group(everyone)  # O3: everyone joins
        except Refused as refused:
            await self.expect(creator, request, refused.code)
            return refused.code
        result = await self.expect(creator, request, None)
        conv = result["conv"]["conv"]
        m.convs[conv] = "cross"
        m.groups.append((conv, tuple(everyone)))
        return None

    async def op_gsend(self, k: int, j: int) -> ErrorCode | None:
        m = self.model
        if not m.groups:
            return None
        conv, members = m.groups[k % len(m.groups)]
        sender = members[j % len(members)]
        if not self.acting(sender):
            return None
        try:
            m.send_as(sender, [u for u in members if u != sender], has_file=False)
        except Refused as refused:
            return await self._message(sender, conv, "cross", refused.code, has_file=False)
        return await self._message(sender, conv, "cross", None, has_file=False)

    async def op_contact(self, caller: int, target: int) -> ErrorCode | None:
        m = self.model
        if caller == target or not self.acting(caller) or target in m.erased:
            return None
        request = rq.ContactsAdd(rid=0, cmid=f"k{self.rid}", user_id=self.ids[target])
        try:
            mine = m.account(caller)
            if mine is not None and "no_contacts" in mine.controls:
                raise Refused(ErrorCode.CONTACTS_FORBIDDEN)  # O1
            m.communicate(caller, target)  # O3, both directions
        except Refused as refused:
            await self.expect(caller, request, refused.code)
            return refused.code
        await self.expect(caller, request, None)
        return None

    def _manage(self, index: int, admin: int, target: int) -> Org:
        """``enterprise._admin`` then ``_target``: X's admins reach only X's accounts."""
        org = self._org(index)
        assert org is not None
        self._member(org, admin)
        if not org.may(admin, "members"):
            raise Refused(ErrorCode.FORBIDDEN)
        if index != X or target in self.model.erased:
            raise Refused(ErrorCode.NOT_FOUND)
        return org

    def _close(self, who: int, code: int) -> None:
        self.model.closed.setdefault(who, code)  # the first close request is the one kept
        self.model.token_good[who] = False

    async def op_controls(
        self, index: int, admin: int, target: int, wanted: tuple[str, ...]
    ) -> ErrorCode | None:
        if self._org(index) is None or not self.acting(admin):
            return None
        request = pe.OrgAccountControls(
            rid=0,
            org=self.model.orgs[index].sid,
            user=self.ids[target],
            controls=list(wanted),  # type: ignore[arg-type]
        )
        try:
            self._manage(index, admin, target)
        except Refused as refused:
            await self.expect(admin, request, refused.code)
            return refused.code
        await self.expect(admin, request, None)
        acct = self.model.accounts[target]
        if "frozen" in wanted and "frozen" not in acct.controls:
            self._close(target, CloseCode.ACCOUNT_SUSPENDED)  # O1: freezing ends sessions
        acct.controls = frozenset(wanted)
        return None

    async def op_status(self, index: int, admin: int, target: int, status: str) -> ErrorCode | None:
        if self._org(index) is None or not self.acting(admin):
            return None
        request = pe.OrgAccountStatus(
            rid=0,
            org=self.model.orgs[index].sid,
            user=self.ids[target],
            status=status,  # type: ignore[arg-type]
        )
        acct = self.model.accounts[target]
        try:
            self._manage(index, admin, target)
            if acct.status == "cancelled" and status != "cancelled":
                raise Refused(ErrorCode.INVALID_STATE)  # P5: cancelled stays cancelled
        except Refused as refused:
            await self.expect(admin, request, refused.code)
            return refused.code
        await self.expect(admin, request, None)
        if acct.status == "active" and status != "active":
            self._close(target, CloseCode.ACCOUNT_SUSPENDED)
        acct.status = status
        return None

    async def op_verify(
        self, index: int, admin: int, target: int, verified: bool, says: bool
    ) -> ErrorCode | None:
        if self._org(index) is None or not self.acting(admin):
            return None
        self.verifier.answer = says
        request = pe.OrgAccountVerifyPerson(
            rid=0, org=self.model.orgs[index].sid, user=self.ids[target], verified=verified
        )
        try:
            self._manage(index, admin, target)
            if verified and not says:
                raise Refused(ErrorCode.VERIFICATION_REQUIRED)  # O3: only the verifier
        except Refused as refused:
            await self.expect(admin, request, refused.code)
            return refused.code
        result = await self.expect(admin, request, None)
        assert result["account"]["person_verified"] == verified, result
        self.model.accounts[target].verified = verified
        return None

    async def op_unverify_self(self, who: int) -> ErrorCode | None:
        if not self.acting(who):
            return None
        result = await self.expect(who, pe.EnterpriseUnverifySelf(rid=0), None)
        assert not result["account"]["person_verified"], result
        self.model.accounts[who].verified = False  # O3: the account removes it itself
        return None

    async def op_relogin(self, who: int) -> ErrorCode | None:
        """A new connection for account ``who``: first its old access token (good only if
        nothing ended its sessions since), else ``login.enterprise``."""
        m = self.model
        conn = connect(queue_frames=4096)
        await self.expect(conn, rq.Hello(rid=0, version=1), None)
        token, issued = self.tokens[who]
        old: ErrorCode | None = None
        if self.now >= issued + self.ctx.credentials.access.ttl_ms:
            old = ErrorCode.TOKEN_EXPIRED
        elif who in m.erased:
            old = ErrorCode.AUTH_FAILED  # O4 with A1: the account is gone
        elif not m.token_good.get(who, False):
            old = ErrorCode.SESSION_REVOKED  # A2/O1: its sessions were ended
        await self.expect(conn, rq.Auth(rid=0, token=token), old)
        if old is None:
            self._attach(who, conn)
            return None
        conn = connect(queue_frames=4096)
        await self.expect(conn, rq.Hello(rid=0, version=1), None)
        x = m.orgs[X]
        acct = m.accounts[who]
        request = pe.LoginEnterprise(rid=0, org=x.sid, account=f"acct{who}", password=PASSWORD)
        verdict: ErrorCode | None = None
        if not x.alive:
            verdict = ErrorCode.AUTH_FAILED
        elif acct.status != "active":
            verdict = ErrorCode.ACCOUNT_DISABLED
        elif "frozen" in acct.controls:
            verdict = ErrorCode.ACCOUNT_FROZEN
        elif "no_login" in acct.controls:
            verdict = ErrorCode.LOGIN_RESTRICTED
        result = await self.expect(conn, request, verdict)
        if verdict is None:
            self.tokens[who] = (result["access_token"], self.now)
            self._attach(who, conn)
            m.token_good[who] = True
        return verdict

    def _attach(self, who: int, conn: Connection) -> None:
        self.ctx.hub.detach(self.conns[who])
        self.conns[who] = conn
        self.ctx.hub.attach(conn)
        self.model.closed.pop(who, None)

    async def _copy_op(
        self, index: int, admin: int, k: int, request: po.AdminHide | po.AdminRecall
    ) -> tuple[Org, Copy] | ErrorCode | None:
        org = self._org(index)
        if org is None or not self.acting(admin):
            return None
        copy_id = k % (len(org.copies) + 1) + 1
        request = msgspec.structs.replace(request, org=org.sid, copy_id=copy_id)
        try:
            self._member(org, admin)
            if not org.may(admin, "moderate"):
                raise Refused(ErrorCode.FORBIDDEN)
            if copy_id > len(org.copies):
                raise Refused(ErrorCode.NOT_FOUND)
        except Refused as refused:
            await self.expect(admin, request, refused.code)
            return refused.code
        result = await self.expect(admin, request, None)
        copy = org.copies[copy_id - 1]
        assert result["copy"]["copy_id"] == copy_id, result
        return org, copy

    async def op_recall(self, index: int, admin: int, k: int) -> ErrorCode | None:
        done = await self._copy_op(index, admin, k, po.AdminRecall(rid=0, org=1, copy_id=1))
        if not isinstance(done, tuple):
            return done
        _, copy = done
        copy.recalled = True
        if copy.source is not None:
            copy.source.recalled = True  # O1: the organisation's own conversation only
        return None

    async def op_hide(self, index: int, admin: int, k: int, hidden: bool) -> ErrorCode | None:
        request = po.AdminHide(rid=0, org=1, copy_id=1, hidden=hidden)
        done = await self._copy_op(index, admin, k, request)
        if not isinstance(done, tuple):
            return done
        _, copy = done
        copy.hidden = hidden
        if hidden and copy.source is not None:
            copy.source.recalled = True  # O2: withdrawn there for everyone
        return None

    async def op_drain(self) -> ErrorCode | None:
        self.model.drain()
        await self.ctx.outbox.drain()
        return None

    def _dissolver(self, org: Org, who: int) -> None:
        self._member(org, who)
        if org.members[who].role != "primary":
            raise Refused(ErrorCode.FORBIDDEN)

    async def op_dissolve(self, index: int, who: int) -> ErrorCode | None:
        org = self._org(index)
        if org is None or not self.acting(who):
            return None
        request = po.OrgDissolve(rid=0, org=org.sid)
        try:
            self._dissolver(org, who)
        except Refused as refused:
            await self.expect(who, request, refused.code)
            return refused.code
        result = await self.expect(who, request, None)
        # O4: it says what would be deleted, and deletes nothing.
        own = [c for c, store in self.model.convs.items() if store == "org"]
        expected = {
            "members": len(org.members),
            "copies": len(org.copies),
            "requests": len(org.requests),
            "conversations": len(own) if index == X else 0,
            "enterprise_accounts": len(self.model.accounts) if index == X else 0,
            "expires_at": self.now + TOKEN_MS,
        }
        assert {k: result[k] for k in expected} == expected, (result, expected)
        org.token = (result["token"], result["expires_at"])
        return None

    async def op_confirm(self, index: int, who: int, good: bool) -> ErrorCode | None:
        org = self._org(index)
        if org is None or not self.acting(who):
            return None
        token = org.token[0] if good and org.token is not None else f"{self.now + TOKEN_MS}.00"
        request = po.OrgDissolveConfirm(rid=0, org=org.sid, token=token)
        try:
            self._dissolver(org, who)
            if not good or org.token is None or self.now >= org.token[1]:
                raise Refused(ErrorCode.INVALID_FIELD)
        except Refused as refused:
            await self.expect(who, request, refused.code)
            return refused.code
        await self.expect(who, request, None)
        org.state = "dissolving"
        return None

    async def op_finish(self) -> ErrorCode | None:
        """The dissolution job and the account erasure job it starts (O4, A1)."""
        m = self.model
        await self.ctx.dissolver.finish_all()
        await self.ctx.eraser.finish_all()
        for index, org in enumerate(m.orgs):
            if org.state != "dissolving":
                continue
            org.state = "gone"
            if index != X:
                continue
            for who in m.accounts:
                if who not in m.erased:
                    m.erased.add(who)
                    self._close(who, CloseCode.SESSION_REVOKED)
                    # It leaves the other organisations it had joined, as a member who
                    # leaves (its consent there revoked); a primary admin's role stays.
                    for other in m.orgs:
                        ms = other.members.get(who)
                        if other.alive and ms is not None and ms.role != "primary":
                            self._end(other, who)
                    # Their words in cross-domain conversations are tombstoned; the
                    # organisation's own conversations are deleted with it.
                    for msg in m.messages:
                        if msg.sender == who:
                            msg.recalled = True
        return None

    async def op_create(self, who: int, name: str) -> ErrorCode | None:
        m = self.model
        if len(m.orgs) >= MAX_ORGS and not any(
            o.alive and o.name == name and o.members.get(who, Membership("x")).role == "primary"
            for o in m.orgs
        ):
            return None
        result = await self.expect(who, po.OrgCreate(rid=0, name=name, disclosure=f"{name}!"), None)
        for org in m.orgs:
            member = org.members.get(who)
            if org.alive and org.name == name and member is not None and member.role == "primary":
                assert result["org"]["org"] == org.sid, (result, org.sid)  # idempotent
                return None
        # A new organisation never takes the id of another one, live or dissolved.
        assert result["org"]["org"] == m.next_sid, (result, m.next_sid)
        created = Org(sid=m.next_sid, name=name, disclosure=f"{name}!", members={})
        created.admit(who, self.now, role="primary")
        m.orgs.append(created)
        m.next_sid += 1
        return None

    async def op_wait(self) -> ErrorCode | None:
        self.clock.advance(11 * 60)
        return None

    # --- checks ---------------------------------------------------------------------------

    async def snapshot(self) -> Any:
        """Everything a refused op must leave as it was."""
        stores = self.ctx.stores
        out: list[Any] = []
        for org in self.model.orgs:
            sid = org.sid
            found = await stores.orgs.get_org(sid)
            out.append(found)
            if found is None:
                continue
            out.append(await stores.orgs.list_members(sid, after_user=0, limit=1000))
            out.append(await stores.orgs.list_requests(sid))
            out.append(await stores.orgs.list_accounts(sid, limit=1000))
            out.append(await stores.orgs.copies(sid, limit=10_000, include_hidden=True))
            out.append(await stores.orgs.audit_log(sid, after=0, limit=10_000))
            for u in self.ids:
                out.append(await stores.consent.consent_history(u, sid))
        for a in self.ids:
            for b in self.ids:
                out.append(await stores.personal.get_contact(a, b))
        for conv in self.model.convs:
            found_conv = await self.ctx.conversations(conv).get_conversation(conv)
            out.append(None if found_conv is None else found_conv.last_seq)
        return out

    async def check(self) -> None:
        m = self.model
        stores = self.ctx.stores
        for index, org in enumerate(m.orgs):
            found = await stores.orgs.get_org(org.sid)
            if org.state == "gone":
                # O4: the organisation's data is gone, its own conversations with it.
                assert found is None, found
                if index == X:
                    prefix = org_conversation_prefix(org.sid)
                    assert await stores.org_conversations.count_conversations(prefix) == 0
                continue
            assert found is not None and found.name == org.name, (found, org)
            assert (found.dissolving_at is not None) == (org.state == "dissolving"), found
            rows = await stores.orgs.list_members(org.sid, after_user=0, limit=1000)
            got = {r.user_id: (r.role, r.permissions, r.disclosure_accepted) for r in rows}
            want = {
                self.ids[u]: (ms.role, ms.permissions, org.disclosure)
                for u, ms in org.members.items()
            }
            assert got == want, ("members", index, got, want)
            requests = [
                (r.request_id, r.user_id, r.kind, r.status, r.disclosure)
                for r in await stores.orgs.list_requests(org.sid)
            ]
            assert requests == [
                (r.request_id, self.ids[r.user], r.kind, r.status, org.disclosure)
                for r in org.requests
            ], ("requests", index, requests, org.requests)
            if index == X:
                for who, acct in m.accounts.items():
                    row = await stores.orgs.account_of_user(self.ids[who])
                    assert row is not None and row.org_id == org.sid, row
                    assert (row.status, row.person_verified, row.controls) == (
                        acct.status,
                        acct.verified,
                        acct.controls,
                    ), (row, acct)
            if org.alive:
                await self.check_copies(org)
        await self.check_conversations()
        for who, code in m.closed.items():
            conn = self.conns[who]
            assert conn.close_request is not None, ("a session that should have ended", who)
            assert conn.close_request.code == code, (who, conn.close_request)

    async def check_copies(self, org: Org) -> None:
        primary = org.primary
        copies: list[dict[str, Any]] = []
        after: int | None = 0
        while after is not None:
            request = po.AdminExport(rid=0, org=org.sid, after=after)
            page = await self.expect(primary, request, None)
            copies.extend(page["copies"])
            after = page["next_after"]
        got = [
            (
                c["copy_id"],
                c["member"],
                c["ts"],
                None if c["content"] is None else c["content"]["text"],
                c["hidden"],
                c["recalled"],
            )
            for c in copies
        ]
        want = [
            (
                c.copy_id,
                self.ids[c.member],
                c.ts,
                None if c.recalled else c.text,
                c.hidden,
                c.recalled,
            )
            for c in org.copies
        ]
        assert got == want, ("copies", org.sid, got, want)
        counts = await self.expect(primary, po.AdminCounts(rid=0, org=org.sid), None)
        per_member: dict[int, int] = {}
        for c in org.copies:
            if not c.hidden and not c.recalled:
                per_member[self.ids[c.member]] = per_member.get(self.ids[c.member], 0) + 1
        assert {c["member"]: c["messages"] for c in counts["counts"]} == per_member, counts

    async def check_conversations(self) -> None:
        x_gone = self.model.orgs[X].state == "gone"
        for msg in self.model.messages:
            store = self.ctx.conversations(msg.conv)
            entry = await store.get_entry(msg.conv, msg.seq)
            if self.model.convs[msg.conv] == "org" and x_gone:
                assert entry is None, entry  # O4: deleted with the organisation
                continue
            assert entry is not None and entry.sender == self.ids[msg.sender], (entry, msg)
            assert entry.recalled == msg.recalled, (entry, msg)
            if not msg.recalled:
                assert entry.body is not None
                assert msgspec.msgpack.decode(entry.body, type=rq.Content).text == msg.text


# --- setup and the test ------------------------------------------------------------------


async def _setup(router: Router, clock: ManualClock, verifier: ScriptedVerifier) -> Run:
    x = Org(sid=1, name="X", disclosure="X reads", members={})
    y = Org(sid=2, name="Y", disclosure="Y reads", members={})
    run = Run(router, clock, verifier, Model(orgs=[x, y], accounts={}))
    router.ctx.enterprise.verifier = verifier
    for i in PERSONAL:
        conn = connect(queue_frames=4096)
        run.conns.append(conn)
        run.ids.append(await login(router, conn, f"+1555040000{i}"))
    for index, (creator, org) in enumerate(((0, x), (3, y))):
        request = po.OrgCreate(rid=0, name=org.name, disclosure=org.disclosure)
        created = await run.expect(creator, request, None)
        assert created["org"]["org"] == org.sid == index + 1, created
        org.admit(creator, clock.now_ms(), role="primary")
    # P2: the operator verified X, so it may create enterprise accounts (P5).
    await router.ctx.stores.orgs.set_verified(x.sid, verified=True, now=clock.now_ms())
    for who in ACCOUNTS:
        create = pe.OrgAccountCreate(rid=0, org=x.sid, account=f"acct{who}", password=PASSWORD)
        made = await run.expect(0, create, None)
        conn = connect(queue_frames=4096)
        run.conns.append(conn)
        await run.expect(conn, rq.Hello(rid=0, version=1), None)
        login_request = pe.LoginEnterprise(
            rid=0, org=x.sid, account=f"acct{who}", password=PASSWORD
        )
        tokens = await run.expect(conn, login_request, None)
        run.ids.append(made["account"]["user"])
        run.tokens[who] = (tokens["access_token"], clock.now_ms())
        run.model.token_good[who] = True
        run.model.accounts[who] = Account()
        x.accounts[who] = run.model.accounts[who]
        x.admit(who, clock.now_ms())  # P5: a member from creation, no invitation
    # O3: the operator verified the person behind account 4 (``rivet org verify-person``);
    # account 5 starts unverified.
    await router.ctx.stores.orgs.set_person_verified(x.sid, run.ids[4], verified=True)
    router.ctx.enterprise.invalidate(run.ids[4])
    run.model.accounts[4].verified = True
    for conn in run.conns:
        router.ctx.hub.attach(conn)
        frames(conn)
    clock.advance(0.001)
    return run


@asynccontextmanager
async def _stores(kind: str) -> AsyncIterator[Stores]:
    if kind == "memory":
        async with open_memory_stores() as stores:
            yield stores
        return
    with tempfile.TemporaryDirectory() as data_dir:
        async with open_sqlite_stores(data_dir, synchronous="OFF") as stores:
            yield stores


async def _run(ops: list[tuple[Any, ...]], store: str) -> None:
    config = Config(store="memory", send_rate_per_second=10_000, send_burst=10_000)
    clock = ManualClock()
    verifier = ScriptedVerifier()
    async with _stores(store) as plain:
        stores = await encryption.sealed(config, plain)  # A3: as the server runs them
        router = build_router(config, stores, clock=clock)
        run = await _setup(router, clock, verifier)
        for op in ops:
            before = await run.snapshot()
            verdict = await run.apply(op)
            if verdict is not None:
                assert await run.snapshot() == before, ("a refused op changed something", op)
            for conn in run.conns:
                frames(conn)  # nobody reads the events here; keep the queues from filling
            await run.check()
            clock.advance(op[-1] / 1000)
        await run.op_drain()
        await run.check()


def run_ops(ops: list[tuple[Any, ...]], store: str = STORE) -> None:
    with cheap_passwords():
        trio.run(_run, ops, store)


#: O4/D6, found by this test: the memory store numbered a new organisation
#: ``len(organisations) + 1``, so once a dissolved organisation's rows were gone the next one
#: took the id of a live one (here Y's, 2) and replaced it: Y's members, requests and copies
#: were lost, and its admins found themselves in a stranger's organisation. Fixed: ids
#: come from a counter and are never given out twice (``storage/memory/orgs.py``, as
#: SQLite's AUTOINCREMENT).
ORG_ID_AFTER_DISSOLUTION = [
    ("dissolve", X, PRIMARY, 0),
    ("confirm", X, PRIMARY, True, 0),
    ("finish", 0),
    ("create", 1, "Z", 0),
]

#: O1, found by this test: ``no_join_orgs`` was judged at ``org.apply`` only, so an
#: application made before X's admin set the control was still approved by Y's admin and
#: the account joined Y. Fixed: ``org.review`` judges it when approving an application
#: (``services/orgs.py``), as ``org.answer`` does when an invitation is accepted.
JOIN_AFTER_NO_JOIN_ORGS = [
    ("apply", Y, 4, 0),
    ("controls", X, PRIMARY, 4, ("no_join_orgs",), 0),
    ("review", Y, PRIMARY, 0, True, 0),
]

#: O4 with P5 and A1, found by this test: a dissolved organisation's enterprise account was
#: erased but stayed a member of the other organisation it had joined (Y listed a deleted
#: user for good), though ``account.delete`` refuses while its user is in an organisation.
#: Fixed: the account leaves its other organisations first (``server/org_membership.py``).
ENDED_ACCOUNT_LEAVES_OTHER_ORGS = [
    ("apply", Y, 4, 0),
    ("review", Y, PRIMARY, 0, True, 0),
    ("dissolve", X, PRIMARY, 0),
    ("confirm", X, PRIMARY, True, 0),
    ("finish", 0),
]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ops=st.lists(OPS, min_size=MAX_OPS // 2, max_size=MAX_OPS))
@example(ops=ORG_ID_AFTER_DISSOLUTION)
@example(ops=JOIN_AFTER_NO_JOIN_ORGS)
@example(ops=ENDED_ACCOUNT_LEAVES_OTHER_ORGS)
def test_org_lifecycle_matches_the_model(ops: list[tuple[Any, ...]]) -> None:
    run_ops(ops)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize(
    "ops",
    [ORG_ID_AFTER_DISSOLUTION, JOIN_AFTER_NO_JOIN_ORGS, ENDED_ACCOUNT_LEAVES_OTHER_ORGS],
    ids=["o4_org_id_never_reused", "o1_no_join_orgs_at_review", "o4_ended_account_leaves"],
)
def test_org_regressions_on_every_backend(ops: list[tuple[Any, ...]], store: str) -> None:
    run_ops(ops, store)
