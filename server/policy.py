"""The policy module: every authorisation decision, who receives each event, and which
store keeps it, in one place a reader can audit (rule D5, house habit 3).

Functions here are pure: they take the records the services loaded and either return a
decision or raise ``ProtocolError``. Services never decide on their own; they ask here.

A conversation the caller cannot see is reported exactly like one that does not exist
(``not_found``), so probing never reveals whether it exists.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Final, Literal

from protocol.errors import ErrorCode, ProtocolError
from protocol.ids import (
    conversation_kind,
    conversation_org,
    direct_conversation_id,
    direct_participants,
    org_direct_conversation_id,
)
from protocol.limits import MAX_LIVE_INVITES, MAX_LIVE_LINKED_GROUPS
from protocol.live import LiveEndReason, LiveRole
from protocol.orgs import CopyContent, OrgAuditEvent
from protocol.requests import Content
from server.clock import Clock
from server.ding.quota import org_payer, personal_payer
from server.org_feed import OrgFeeds
from server.org_view import _MINT, OrgView, OwnRecall
from server.services.admin import audit_info
from storage.consent import ConsentChange, consented_at
from storage.ding_records import Ding as DingRecord
from storage.enterprise import AccountStatus, EnterpriseAccount
from storage.group_capacity import GroupExpansion
from storage.orgs import (
    AuditEntry,
    JoinRequest,
    Organisation,
    OrganisationStore,
    OrgMember,
    RequestKind,
    RequestStatus,
)
from storage.records import Conversation, Entry, Member, RoleName, User

RECALL_WINDOW_MS: Final = 24 * 3600 * 1000

GroupAction = Literal[
    "add", "remove", "rename", "set_role", "transfer", "mute_member", "mute_all", "set_history"
]

#: Who may do each group action (M1, M2). Owners can do everything; admins manage
#: ordinary members; members may invite others.
_GROUP_ACTION_ROLES: Final[dict[GroupAction, frozenset[RoleName]]] = {
    "add": frozenset({"owner", "admin", "member"}),
    "remove": frozenset({"owner", "admin"}),
    "rename": frozenset({"owner", "admin"}),
    "set_role": frozenset({"owner"}),
    "transfer": frozenset({"owner"}),
    "mute_member": frozenset({"owner", "admin"}),
    "mute_all": frozenset({"owner", "admin"}),
    "set_history": frozenset({"owner", "admin"}),
}

_RANK: Final[dict[RoleName, int]] = {"owner": 2, "admin": 1, "member": 0}


def not_found() -> ProtocolError:
    return ProtocolError(ErrorCode.NOT_FOUND, "no such conversation")


def exists(user: User | None) -> bool:
    """A1: a deleted account is gone for everyone else. As the target of a contact request
    or a block, a group, a new single chat, a live or organisation invitation or a report,
    it is "no such user" (2006), as if it had never existed; its user row stays, marked
    ``deleted``, only for the erasure job and so that its id is never given out again."""
    return user is not None and not user.deleted


# --- single chats and chat with oneself -------------------------------------------------------


def direct_peer(caller: int, conv_id: str) -> int:
    """The other participant of a single chat id the caller is part of (the caller for chat
    with oneself). Any other id, or a non-canonical one, is not found."""
    return _direct_peer(caller, conv_id)


@functools.lru_cache(maxsize=16_384)
def _direct_peer(caller: int, conv_id: str) -> int:
    # Memoised: a pure function of the two arguments (it parses the id and rebuilds the
    # canonical one), asked twice per message sent (the send's checks and O1/O3's). Only
    # answers are kept; a refusal raises, is not cached, and is decided afresh every time.
    kind = conversation_kind(conv_id)
    if kind == "group":
        raise ValueError("not a single chat")
    low, high = direct_participants(conv_id)
    org = conversation_org(conv_id)
    canonical = (
        direct_conversation_id(low, high)
        if org is None
        else org_direct_conversation_id(org, low, high)
    )
    if caller not in (low, high) or canonical != conv_id:
        raise not_found()
    return high if caller == low else low


def direct_conversation_of(
    caller: int, peer: int, accounts: dict[int, EnterpriseAccount | None]
) -> str:
    """The id of the single chat between ``caller`` and ``peer``: the organisation's when
    both are enterprise accounts of one organisation (D2), else cross-domain (D3)."""
    mine, theirs = accounts.get(caller), accounts.get(peer)
    if caller != peer and mine is not None and theirs is not None and mine.org_id == theirs.org_id:
        return org_direct_conversation_id(mine.org_id, caller, peer)
    return direct_conversation_id(caller, peer)


def may_place(conv_id: str, accounts: dict[int, EnterpriseAccount | None]) -> None:
    """D2/D3, the placement rule: ``accounts`` holds the conversation's participants (or
    everyone it would hold after a change) with their enterprise accounts.

    An organisation-internal conversation (``o:<org>:...``, kept in that organisation's
    store) holds only that organisation's enterprise accounts, so nothing of an outsider
    ever lands in an organisation's store. The single chat between two enterprise accounts
    of one organisation is always the organisation's, never a cross-domain ``d:`` chat."""
    org = conversation_org(conv_id)
    if org is not None:
        for user_id, account in accounts.items():
            if account is None or account.org_id != org:
                raise ProtocolError(
                    ErrorCode.ORGANISATION_CONVERSATION,
                    f"user {user_id} is not an enterprise account of organisation {org}: "
                    "only they take part in its conversations",
                )
        return
    if conversation_kind(conv_id) != "direct" or len(accounts) != 2:
        return
    (low, first), (high, second) = sorted(accounts.items())
    if first is not None and second is not None and first.org_id == second.org_id:
        raise ProtocolError(
            ErrorCode.ORGANISATION_CONVERSATION,
            "the single chat between these accounts is "
            f"{org_direct_conversation_id(first.org_id, low, high)}",
        )


def may_open_direct(*, peer_exists: bool) -> None:
    if not peer_exists:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")


# --- seeing and writing into a conversation ---------------------------------------------------


def may_read(member: Member | None) -> Member:
    """Reading history, receipts or info needs a membership, current or past (a departed
    member still sees what they saw while in the group)."""
    if member is None:
        raise not_found()
    return member


def may_write(member: Member | None) -> Member:
    """Writing (read positions, leaving) needs a current membership."""
    if member is None or not member.active:
        raise not_found()
    return member


def may_send(
    *, conversation: Conversation | None, member: Member | None, blocked_by_peer: bool
) -> None:
    """Sending a message (M1): a current member; in groups not muted and not under mute-all
    unless owner or admin; in single chats not blocked by the peer (M5)."""
    if conversation is not None and conversation.kind == "group":
        member = may_write(member)
        if member.muted:
            raise ProtocolError(ErrorCode.MUTED, "you are muted in this group")
        if conversation.mute_all and member.role == "member":
            raise ProtocolError(ErrorCode.MUTED, "the group is muted")
        return
    if conversation is not None:
        may_write(member)
        if conversation.kind == "direct" and conversation.member_count < 2:
            # A1: the peer's account was erased, and the erasure made it leave the chat:
            # no such user, as for a new chat with it (the chat's history stays readable).
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")
    if blocked_by_peer:
        raise ProtocolError(ErrorCode.BLOCKED, "the recipient does not accept your messages")


def check_content(content: Content) -> None:
    """A message says something: text has text; a file or image names its file."""
    if content.kind == "text" and not content.text.strip() and content.file is None:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, "a text message needs text", path="$.content.text"
        )
    if content.kind in ("file", "image") and content.file is None:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"a {content.kind} message needs a file", path="$.content.file"
        )


def may_mention(conversation: Conversation, member: Member, *, mention_all: bool) -> None:
    """@all is for the group's owner and admins."""
    if mention_all and (conversation.kind != "group" or member.role == "member"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "only owners and admins may mention everyone")


def may_recall(*, caller: int, member: Member | None, entry: Entry | None, now: int) -> None:
    """M4: senders within 24 hours; a group's owner and admins at any time (O1 applies to
    organisation scopes, which a later issue adds)."""
    member = may_write(member)
    if entry is None or entry.kind != "message":
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such message")
    if member.role in ("owner", "admin") and entry.conv_id.startswith("g:"):
        return
    if entry.sender != caller:
        raise ProtocolError(ErrorCode.FORBIDDEN, "only the sender or a group admin may recall")
    if now - entry.ts > RECALL_WINDOW_MS:
        raise ProtocolError(ErrorCode.RECALL_WINDOW_PASSED)


# --- groups -----------------------------------------------------------------------------------


def may_manage(
    action: GroupAction, *, conversation: Conversation | None, actor: Member | None
) -> tuple[Conversation, Member]:
    if conversation is None or conversation.kind != "group":
        raise not_found()
    actor = may_write(actor)
    if actor.role not in _GROUP_ACTION_ROLES[action]:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"your role may not {action.replace('_', ' ')}")
    return conversation, actor


def may_act_on(actor: Member, target: Member | None) -> Member:
    """Acting on another member (remove, mute, role) needs a strictly higher rank."""
    if target is None or not target.active:
        raise ProtocolError(ErrorCode.NOT_MEMBER)
    if _RANK[actor.role] <= _RANK[target.role]:
        raise ProtocolError(ErrorCode.FORBIDDEN, "you may not act on a member of equal rank")
    return target


def may_leave(member: Member | None) -> Member:
    member = may_write(member)
    if member.role == "owner":
        raise ProtocolError(ErrorCode.INVALID_STATE, "transfer ownership before leaving")
    return member


def may_admit(conversation: Conversation, *, adding: int, limit: int | None = None) -> None:
    """M2: a group admits members up to its member limit: ``limit``, the effective one
    (``effective_member_limit``) when the service passes it, else the group's base limit.
    Members beyond it stay (a lapsed expansion removes nobody); nobody new gets in."""
    allowed = conversation.member_limit if limit is None else limit
    if conversation.member_count + adding > allowed:
        raise ProtocolError(ErrorCode.MEMBER_LIMIT, f"the group allows {allowed} members")


def effective_member_limit(
    base: int, expansions: Iterable[GroupExpansion], *, now: int
) -> tuple[int, int | None]:
    """M2: a group's member limit at ``now`` and when it lapses: the largest tier of any
    organisation's expansion that has not lapsed (by the injected clock), with the latest
    end among expansions to that tier; else the base limit and None."""
    active = [e for e in expansions if e.active(now) and e.member_limit > base]
    if not active:
        return base, None
    top = max(e.member_limit for e in active)
    return top, max(e.expires_at for e in active if e.member_limit == top)


def may_expand_group(
    caller: int,
    *,
    conversation: Conversation | None,
    group_member: Member | None,
    org_member: OrgMember | None,
) -> OrgMember:
    """M2: who may spend an organisation's package on a group. The caller must be a current
    member of the group (else, as for any conversation, ``not_found``) and of the
    organisation (else the organisation's ``not_found``); then either own the group, or be
    an admin of the organisation with the ``members`` permission (the package's own
    permission, as for the DING package, G2)."""
    if conversation is None or conversation.kind != "group":
        raise not_found()
    may_write(group_member)
    if org_member is None or not org_member.active:
        raise org_not_found()
    if conversation.owner_id != caller and not org_member.may("members"):
        raise ProtocolError(
            ErrorCode.FORBIDDEN,
            "only the group's owner, or an organisation admin with the 'members' permission",
        )
    return org_member


def expansion_price(tiers: Mapping[int, int], tier: int) -> int:
    """M2: what one period of ``tier`` costs; ``not_a_tier`` for a limit that is not one of
    the server's expansion tiers (the base limit is not one: it needs no expansion)."""
    if tier not in tiers:
        offered = ", ".join(str(t) for t in sorted(tiers)) or "none"
        raise ProtocolError(ErrorCode.NOT_A_TIER, f"expansion tiers: {offered}", path="$.tier")
    return tiers[tier]


def may_manage_group_package(member: OrgMember | None) -> OrgMember:
    """M2: topping up the group-expansion package and reading it needs what the DING
    package needs (G2): the ``members`` permission; to non-members the organisation does
    not exist."""
    return may_manage_ding_package(member)


# --- who receives what ---------------------------------------------------------------------------


def entry_recipients(
    conversation: Conversation, entry: Entry, members: Iterable[int], *, departed: Iterable[int]
) -> set[int]:
    """Who receives a conversation entry live (D5).

    Messages, system entries and recalls go to every current member; the users a system
    entry removes also receive that entry (it is the last one they see). Read positions go to
    the reader and, outside groups, to the peer (a read receipt); in groups, senders get
    coalesced read counts instead.
    """
    if entry.kind == "read":
        if conversation.kind == "group":
            return {entry.sender}
        return set(members) | {entry.sender}
    return set(members) | set(departed)


def presence_audience(*, contacts: Iterable[int], direct_peers: Iterable[int]) -> set[int]:
    """Presence goes to accepted contacts and single-chat peers; group members see it only
    when they subscribe to the members they are showing (no fan-out to every group)."""
    return set(contacts) | set(direct_peers)


def store_for(conv_id: str) -> Literal["cross", "organisation"]:
    """Which store keeps a conversation, and what was started in it (a live stream's
    record): single chats, ordinary groups and chat with oneself are cross-domain (D3); an
    organisation's own conversations (``o:<org>:...``) are the organisation's (D2)."""
    conversation_kind(conv_id)
    return "cross" if conversation_org(conv_id) is None else "organisation"


# --- live streams (L1) ----------------------------------------------------------------------
#
# A stream is visible to the members of its groups (the one it started in and those it is
# linked to), to the users its host invited, and to whoever takes part in it. To anyone else
# it does not exist: every refusal they get is ``live_not_found``, like an unknown live id.


def live_not_found() -> ProtocolError:
    return ProtocolError(ErrorCode.NOT_FOUND, "no such live stream")


def may_go_live(*, conversation: Conversation | None, member: Member | None) -> Member:
    """Starting a stream in a group, or linking one to it: a current member who may speak
    there. Under mute-all only the owner and admins may; a muted member may not."""
    if conversation is None or conversation.kind != "group":
        raise not_found()
    member = may_write(member)
    if member.muted:
        raise ProtocolError(ErrorCode.MUTED, "you are muted in this group")
    if conversation.mute_all and member.role == "member":
        raise ProtocolError(
            ErrorCode.MUTED, "the group is muted: only its owner and admins may go live"
        )
    return member


def may_claim_live_groups(taken: Iterable[str]) -> None:
    """A group has at most one active stream."""
    busy = sorted(taken)
    if busy:
        raise ProtocolError(
            ErrorCode.LIVE_IN_PROGRESS, f"group {busy[0]} already has a live stream"
        )


def may_link_live(
    *, linked: int, adding: int, origin: str = "", groups: Iterable[str] = ()
) -> None:
    """At most ``MAX_LIVE_LINKED_GROUPS`` linked groups, all in the origin group's domain
    (D2/D3): a stream's record names its groups, and it lives in the origin's store."""
    for group in groups:
        if conversation_org(group) != conversation_org(origin):
            raise ProtocolError(
                ErrorCode.ORGANISATION_CONVERSATION,
                "a live stream links only groups of its own domain: an organisation's own "
                "groups with each other, ordinary groups with each other",
            )
    if linked + adding > MAX_LIVE_LINKED_GROUPS:
        raise ProtocolError(
            ErrorCode.INVALID_STATE,
            f"a live stream links at most {MAX_LIVE_LINKED_GROUPS} groups besides its own",
        )


def may_watch_live(*, is_host: bool, member_of_groups: bool, invited: bool, removed: bool) -> None:
    """Joining as a viewer: a member of one of the stream's groups, or invited, and not
    removed by the host. The host takes their own stream back with ``live.resume``."""
    if removed or not (member_of_groups or invited or is_host):
        raise live_not_found()
    if is_host:
        raise ProtocolError(
            ErrorCode.INVALID_STATE, "you host this stream: take it back with live.resume"
        )


def may_host_live(*, caller: int, host: int, visible: bool) -> None:
    """What only the host may do: link, invite, answer hands, remove, resume."""
    if caller == host:
        return
    if not visible:
        raise live_not_found()
    raise ProtocolError(ErrorCode.FORBIDDEN, "only the host may do this")


def may_end_live(
    *, caller: int, host: int, origin_member: Member | None, visible: bool
) -> LiveEndReason:
    """The host ends their stream; so may the owner and admins of the group it started in."""
    if caller == host:
        return "host"
    if origin_member is not None and origin_member.active and origin_member.role != "member":
        return "admin"
    if not visible:
        raise live_not_found()
    raise ProtocolError(
        ErrorCode.FORBIDDEN, "only the host or the group's owner and admins may end the stream"
    )


def may_take_part(role: LiveRole | None) -> LiveRole:
    """Ops for participants (leave, viewers, likes) need this connection in the stream."""
    if role is None:
        raise live_not_found()
    return role


def may_leave_live(role: LiveRole | None) -> None:
    if may_take_part(role) == "host":
        raise ProtocolError(ErrorCode.INVALID_STATE, "the host ends the stream with live.end")


def may_raise_hand(role: LiveRole | None, *, user_on_stage: bool = False) -> None:
    """Viewers ask to co-host; who is on stage already has nothing to ask. The stage holds
    one device per user: a viewer device of a user with another device on stage is on stage
    too (accepting its hand would move their place without telling anyone)."""
    if may_take_part(role) != "viewer" or user_on_stage:
        raise ProtocolError(ErrorCode.INVALID_STATE, "you are already on stage")


def may_answer_hand(*, raised: bool, accept: bool, cohosts: int, max_cohosts: int) -> None:
    if not raised:
        raise ProtocolError(ErrorCode.INVALID_STATE, "that user has not raised a hand")
    if accept and cohosts >= max_cohosts:
        raise ProtocolError(
            ErrorCode.COHOST_LIMIT, f"a live stream has at most {max_cohosts} co-hosts"
        )


def may_remove_from_live(*, host: int, target: int, present: bool) -> None:
    """The host takes a co-host off the stage, or removes a viewer."""
    if target == host:
        raise ProtocolError(ErrorCode.INVALID_STATE, "the host ends the stream with live.end")
    if not present:
        raise ProtocolError(ErrorCode.NOT_FOUND, "that user is not in this live stream")


def may_invite_live(*, invited: int, adding: int) -> None:
    if invited + adding > MAX_LIVE_INVITES:
        raise ProtocolError(
            ErrorCode.INVALID_STATE, f"a live stream may invite at most {MAX_LIVE_INVITES} users"
        )


def may_signal(*, sender: LiveRole | None, target: LiveRole | None, same_device: bool) -> None:
    """The WebRTC relay: between two devices of the same stream, one of them on stage (the
    host or a co-host); viewers do not signal each other through the server. A target that
    is not such a device is ``not_found`` whether or not it exists anywhere else."""
    if sender is None:
        raise live_not_found()
    if target is None or same_device or (sender == "viewer" and target == "viewer"):
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such device in this live stream")


def live_audience(
    *, members: Iterable[int], invited: Iterable[int], participants: Iterable[int]
) -> set[int]:
    """Who hears that a stream started or ended: the members of its groups, the users its
    host invited and whoever takes part. Counts, hands and signals go to participants only,
    coalesced (``server.live``), never to every member."""
    return set(members) | set(invited) | set(participants)


# --- platform moderation (C1) ---------------------------------------------------------------


def may_report_message(*, reporter: int, member: Member | None, entry: Entry | None) -> Entry:
    """A user reports a message they can see (a member, current or past, within their window)
    and did not send. A conversation they are not in is not found, like one that does not
    exist."""
    if member is None:
        raise not_found()
    # Within any of their memberships' ranges (``Member.sees``): one added back to a group
    # that hides its history may report what they saw before, not what was said between.
    visible = entry is not None and entry.kind == "message" and member.sees(entry.seq)
    if entry is None or not visible:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such message")
    if entry.sender == reporter:
        raise ProtocolError(ErrorCode.INVALID_STATE, "you cannot report your own message")
    return entry


def may_report_user(*, reporter: int, target: int, exists: bool) -> None:
    if not exists:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such user")
    if target == reporter:
        raise ProtocolError(ErrorCode.INVALID_STATE, "you cannot report yourself")


# --- DING messages (G1-G3) --------------------------------------------------------------------
#
# A DING is seen by its sender and, once it went out, by its recipients; to anyone else (and
# to a recipient before a scheduled DING goes out) it does not exist: ``ding_not_found``.


def ding_not_found() -> ProtocolError:
    return ProtocolError(ErrorCode.NOT_FOUND, "no such DING")


def ding_store_for(
    *, sender: int, recipients: Iterable[int], accounts: Mapping[int, EnterpriseAccount | None]
) -> int | None:
    """D2/D3, the placement rule of DINGs (as ``may_place`` is for conversations): the
    organisation whose store keeps the DING, or None for the cross-domain store. ``accounts``
    holds the enterprise account (or None) of the sender and of every recipient.

    A DING whose sender and every recipient are enterprise accounts of one organisation is
    that organisation's (kept in its store, sealed with its key, deleted with it, O4); any
    other DING (a personal account on either side, or accounts of two organisations) is
    cross-domain, whoever pays for it."""
    mine = accounts.get(sender)
    if mine is None:
        return None
    for user in recipients:
        theirs = accounts.get(user)
        if theirs is None or theirs.org_id != mine.org_id:
            return None
    return mine.org_id


def ding_payer(
    sender: int,
    *,
    org: int | None,
    membership: OrgMember | None,
    account: EnterpriseAccount | None,
) -> str:
    """G2: who pays for a DING's SMS and call steps. ``org`` is the context the sender asked
    for, ``membership`` the sender's membership of it (None if there is none, or the
    organisation does not exist or is dissolving), ``account`` the sender's enterprise
    account if they are one.

    An enterprise account always sends in its own organisation's context (naming another is
    ``forbidden``). With ``org``, the sender must be a current member (anyone else gets the
    ``not_found`` of a missing organisation) and the organisation's package pays, the use
    recorded against the sender (the G2 decision: a sender in several organisations sends in
    the context of one of them, which pays). Without it, the personal monthly allowance."""
    if account is not None:
        if org is not None and org != account.org_id:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                "an enterprise account sends DINGs in its own organisation's context",
                path="$.org",
            )
        return org_payer(account.org_id, sender)
    if org is None:
        return personal_payer(sender)
    if membership is None or not membership.active or membership.org_id != org:
        raise org_not_found()
    return org_payer(org, sender)


def may_manage_ding_package(member: OrgMember | None) -> OrgMember:
    """G2: the organisation's DING package (topping it up, reading what is left and who
    used it) is for admins with the ``members`` permission; to anyone who is not a current
    member the organisation does not exist."""
    if member is None or not member.active:
        raise org_not_found()
    if not member.may("members"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "this needs the 'members' permission")
    return member


def may_ding(
    *,
    sender: int,
    recipients: Sequence[int],
    reachable: AbstractSet[int],
    blocked_by: AbstractSet[int],
) -> list[int]:
    """G1: a DING goes to people the sender shares a conversation or an organisation with
    (``reachable``), never to the sender, and not to someone who
    blocked the sender (M5). Someone the sender shares nothing with is refused exactly like
    a user that does not exist, so a DING never reveals who has an account. Returns the
    recipients without repeats, in the order given."""
    for index, user in enumerate(recipients):
        path = f"$.recipients[{index}]"
        if user == sender:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "you cannot DING yourself", path=path)
        if user not in reachable:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, "no such user among your conversations", path=path
            )
        if user in blocked_by:
            raise ProtocolError(
                ErrorCode.BLOCKED, "the recipient does not accept your DINGs", path=path
            )
    return list(dict.fromkeys(recipients))


def ding_send_time(*, send_at: int | None, now: int, horizon_ms: int) -> int:
    """When a DING goes out: ``send_at`` if it is in the future (at most ``horizon_ms``
    ahead), else now."""
    if send_at is None or send_at <= now:
        return now
    if send_at - now > horizon_ms:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, "send_at is too far in the future", path="$.send_at"
        )
    return send_at


def ding_viewer(ding: DingRecord, caller: int) -> Literal["sender", "recipient"]:
    """The caller's part in a DING, or ``ding_not_found``."""
    if caller == ding.sender:
        return "sender"
    if ding.state == "sent" and ding.recipient(caller) is not None:
        return "recipient"
    raise ding_not_found()


def may_cancel_ding(ding: DingRecord, caller: int) -> None:
    """Only the sender, and only while the DING is scheduled."""
    if ding_viewer(ding, caller) != "sender":
        raise ProtocolError(ErrorCode.FORBIDDEN, "only the sender may cancel a DING")
    if ding.state != "scheduled":
        raise ProtocolError(ErrorCode.INVALID_STATE, f"the DING is {ding.state}, not scheduled")


def may_answer_ding(ding: DingRecord, caller: int) -> None:
    """Reading and confirming are for the recipients of a DING that went out."""
    if ding_viewer(ding, caller) != "recipient":
        raise ProtocolError(ErrorCode.FORBIDDEN, "only a recipient may read or confirm a DING")


def may_redding(ding: DingRecord, caller: int, *, now: int, interval_ms: int) -> list[int]:
    """G3: the sender may DING the recipients who have not confirmed again, once the DING
    went out, at most once per ``interval_ms`` (counted from the last round). Returns them."""
    if ding_viewer(ding, caller) != "sender":
        raise ProtocolError(ErrorCode.FORBIDDEN, "only the sender may re-DING")
    if ding.state != "sent":
        raise ProtocolError(ErrorCode.INVALID_STATE, f"the DING is {ding.state}")
    unconfirmed = [r.user_id for r in ding.recipients if r.confirmed_at is None]
    if not unconfirmed:
        raise ProtocolError(ErrorCode.INVALID_STATE, "every recipient has confirmed")
    wait_ms = ding.round_at + interval_ms - now
    if wait_ms > 0:
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            "a DING may be sent again once per re-DING interval",
            retry_after=round(wait_ms / 1000, 3),
        )
    return unconfirmed


# --- organisations, consent and admin paths (P2-P5, D4, D5, O1, O2) ------------------------------


def may_copy(
    *,
    spans: Sequence[tuple[int, int | None]],
    consent: list[ConsentChange],
    at: int,
    enterprise_account: bool = False,
) -> bool:
    """D4, the consent rule: a member's own cross-domain message becomes the organisation's
    only if, at the moment it was committed, they were a member and had consented during
    that membership. Revoking or leaving stops new copies; copies made before stay. Consent
    does not outlive a membership: after leaving and rejoining, nothing is copied until the
    member consents again (rejoining, like any acceptance, never grants consent).

    An enterprise account's own data is the organisation's by definition (§1.9, D4
    decision): its messages are copied to its organisation with no consent step."""
    if enterprise_account:
        return any(joined <= at and (left is None or at < left) for joined, left in spans)
    for joined, left in spans:
        if joined <= at and (left is None or at < left):
            return consented_at([c for c in consent if c.at >= joined], at)
    return False


def copy_content(content: Content) -> CopyContent:
    """D4: the copy holds only what the member produced. Mentions name other people and a
    reply quotes someone else's message: neither is copied."""
    return CopyContent(kind=content.kind, text=content.text, file=content.file)


def ding_copy_content(text: str) -> CopyContent:
    """D4 for a DING (issue #4): its copy holds only what the sender produced, the text.
    Nothing of the recipients (ids, names, delivery, read or confirm states), the channel
    plan or the payer is copied."""
    return CopyContent(kind="text", text=text)


def conversation_ref(key: bytes, org_id: int, conv_id: str) -> str:
    """An opaque reference to a conversation, stable within one organisation (so admins can
    group a member's copies by conversation) and unrelated across organisations; it reveals
    neither the conversation id nor who else is in it."""
    digest = hmac.new(key, f"{org_id}:{conv_id}".encode(), hashlib.sha256).digest()
    return digest[:16].hex()


def org_not_found() -> ProtocolError:
    return ProtocolError(ErrorCode.NOT_FOUND, "no such organisation")


def admin_view(
    member: OrgMember | None,
    permission: str,
    *,
    store: OrganisationStore,
    clock: Clock,
    feeds: OrgFeeds,
    recall_own: OwnRecall | None = None,
) -> OrgView:
    """D5, the one gate of every admin path: an admin of the organisation with the
    permission gets a view of the organisation's own store, and nothing else. Anyone who is
    not a current member gets the same ``not_found`` as for an organisation that does not
    exist; a member without the permission gets ``forbidden``."""
    if member is None or not member.active:
        raise org_not_found()
    if not member.may(permission):
        raise ProtocolError(ErrorCode.FORBIDDEN, f"this needs the {permission!r} permission")
    org_id = member.org_id

    def on_audit(entry: AuditEntry) -> None:
        feeds.publish(org_id, OrgAuditEvent(org=org_id, entry=audit_info(entry)))

    return OrgView(
        _MINT,
        store=store,
        org_id=org_id,
        admin=member,
        clock=clock,
        on_audit=on_audit,
        feeds=feeds,
        recall_own=recall_own,
    )


def invitation_kind(inviter: OrgMember | None) -> tuple[RequestKind, RequestStatus]:
    """P4: an admin's invitation goes to the user; a member's goes to an admin first."""
    if inviter is None or not inviter.active:
        raise org_not_found()
    if inviter.may("members"):
        return "invite", "pending_user"
    return "member_invite", "pending_admin"


def may_review(reviewer: OrgMember | None, request: JoinRequest | None) -> JoinRequest:
    if reviewer is None or not reviewer.active:
        raise org_not_found()
    if not reviewer.may("members"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "this needs the 'members' permission")
    if request is None or request.status != "pending_admin":
        raise ProtocolError(ErrorCode.INVALID_STATE, "no request waits for an admin")
    return request


def may_answer(caller: int, request: JoinRequest | None) -> JoinRequest:
    """Only the invited user answers an invitation waiting for them (P4: nobody is added
    without saying yes)."""
    if request is None or request.user_id != caller:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such invitation")
    if request.status != "pending_user":
        raise ProtocolError(ErrorCode.INVALID_STATE, f"the request is {request.status}")
    return request


def may_remove_member(admin: OrgMember | None, target: OrgMember | None) -> OrgMember:
    if admin is None or not admin.active:
        raise org_not_found()
    if not admin.may("members"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "this needs the 'members' permission")
    if target is None or not target.active:
        raise ProtocolError(ErrorCode.NOT_MEMBER)
    if target.role == "primary":
        raise ProtocolError(ErrorCode.FORBIDDEN, "the primary admin cannot be removed")
    return target


def may_set_admin(admin: OrgMember | None, target: OrgMember | None) -> OrgMember:
    if admin is None or not admin.active:
        raise org_not_found()
    if not admin.may("admins"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "this needs the 'admins' permission")
    if target is None or not target.active:
        raise ProtocolError(ErrorCode.NOT_MEMBER)
    if target.role == "primary":
        raise ProtocolError(ErrorCode.FORBIDDEN, "the primary admin's role is fixed")
    return target


def may_delete_account(*, org_ids: list[int], owned_groups: list[str]) -> None:
    """A1 decisions: a member leaves their organisations before deleting the account (their
    organisations' data is not the user's to delete), and an owner hands over each group
    that has other members."""
    if org_ids:
        raise ProtocolError(ErrorCode.INVALID_STATE, "leave your organisations first")
    if owned_groups:
        raise ProtocolError(
            ErrorCode.INVALID_STATE, f"transfer ownership of {owned_groups[0]} first"
        )


def may_dissolve(member: OrgMember | None) -> OrgMember:
    """O4: only the primary admin dissolves the organisation."""
    if member is None or not member.active:
        raise org_not_found()
    if member.role != "primary":
        raise ProtocolError(ErrorCode.FORBIDDEN, "only the primary admin may dissolve")
    return member


def may_leave_org(member: OrgMember | None) -> OrgMember:
    if member is None or not member.active:
        raise org_not_found()
    if member.role == "primary":
        raise ProtocolError(ErrorCode.INVALID_STATE, "the primary admin cannot leave")
    return member


def may_see_members(member: OrgMember | None) -> OrgMember:
    """The directory is the organisation's data, for its members."""
    if member is None or not member.active:
        raise org_not_found()
    return member


# --- enterprise accounts (P5), real-person verification (O3), controls (O1) -------------------

#: O1: each control refuses with its own code.
_CONTROL_REFUSALS: Final[dict[str, tuple[ErrorCode, str]]] = {
    "no_messages": (ErrorCode.MESSAGES_FORBIDDEN, "your organisation forbids you messages"),
    "no_files": (ErrorCode.FILES_FORBIDDEN, "your organisation forbids you files"),
    "no_contacts": (ErrorCode.CONTACTS_FORBIDDEN, "your organisation forbids you new contacts"),
    "no_join_orgs": (
        ErrorCode.JOIN_ORGS_FORBIDDEN,
        "your organisation forbids you joining other organisations",
    ),
    "no_login": (ErrorCode.LOGIN_RESTRICTED, "your organisation restricted your login"),
    "frozen": (ErrorCode.ACCOUNT_FROZEN, "your organisation froze this account"),
    "no_ding": (ErrorCode.DING_FORBIDDEN, "your organisation restricted DING for you"),
    "no_live": (ErrorCode.LIVE_FORBIDDEN, "your organisation restricted live streams for you"),
    "no_external_chat": (
        ErrorCode.EXTERNAL_CHAT_FORBIDDEN,
        "your organisation restricted chat with people outside it",
    ),
}

#: O1: controls whose setting closes the account's connections at once.
_CLOSING_CONTROLS: Final = frozenset({"frozen"})


def _refuse_control(account: EnterpriseAccount | None, control: str) -> None:
    if account is not None and control in account.controls:
        code, message = _CONTROL_REFUSALS[control]
        raise ProtocolError(code, message)


def is_outsider(account: EnterpriseAccount, other: EnterpriseAccount | None) -> bool:
    """O3: to an enterprise account, everyone but its own organisation's enterprise accounts
    is an outsider (personal users, and other organisations' accounts)."""
    return other is None or other.org_id != account.org_id


def verification_required() -> ProtocolError:
    return ProtocolError(
        ErrorCode.VERIFICATION_REQUIRED,
        "an enterprise account without real-person verification cannot communicate "
        "outside its organisation",
    )


def may_communicate(first: EnterpriseAccount | None, second: EnterpriseAccount | None) -> None:
    """O3, both directions: if either side is an enterprise account without real-person
    verification and the other is an outsider to it, they may not be put in touch."""
    for me, other in ((first, second), (second, first)):
        if me is not None and not me.person_verified and is_outsider(me, other):
            raise verification_required()


def may_send_as(
    sender: EnterpriseAccount | None,
    *,
    has_file: bool,
    others: Iterable[EnterpriseAccount | None],
) -> None:
    """O1 and O3 for a message from ``sender`` to a conversation whose other members are
    ``others``: the organisation's message and file controls, its external-chat control,
    and (sender side) the verification gate."""
    if sender is None:
        return
    _refuse_control(sender, "no_messages")
    if has_file:
        _refuse_control(sender, "no_files")
    if any(is_outsider(sender, other) for other in others):
        _refuse_control(sender, "no_external_chat")
        if not sender.person_verified:
            raise verification_required()


def may_chat_directly(
    sender: EnterpriseAccount | None, peer: EnterpriseAccount | None, *, has_file: bool
) -> None:
    """A single chat: the sender's controls, and O3 in both directions."""
    may_send_as(sender, has_file=has_file, others=[peer])
    may_communicate(sender, peer)


def may_form_group(
    accounts: dict[int, EnterpriseAccount | None], *, joining: AbstractSet[int]
) -> None:
    """O3 for creating a group or adding to it: ``accounts`` holds every member after the
    change (user id -> enterprise account or None), ``joining`` the new ones. An unverified
    enterprise account may not join a group with outsiders, nor may an outsider join a group
    it is in."""
    for user_id, account in accounts.items():
        if account is None or account.person_verified:
            continue
        relevant = accounts.keys() if user_id in joining else joining
        for other in relevant:
            if other != user_id and is_outsider(account, accounts[other]):
                raise verification_required()


def may_add_contact(caller: EnterpriseAccount | None, target: EnterpriseAccount | None) -> None:
    """O1 (no new contacts) and O3 in both directions."""
    _refuse_control(caller, "no_contacts")
    may_communicate(caller, target)


def may_join_org(account: EnterpriseAccount | None, org_id: int) -> None:
    """O1: an enterprise account may be forbidden to join other organisations."""
    if account is not None and account.org_id != org_id:
        _refuse_control(account, "no_join_orgs")


def may_leave_own_org(account: EnterpriseAccount | None, org_id: int) -> None:
    """P5: an enterprise account belongs to its organisation; it is cancelled, not left."""
    if account is not None and account.org_id == org_id:
        raise ProtocolError(
            ErrorCode.ENTERPRISE_ACCOUNT_BOUND,
            "an enterprise account cannot leave its organisation: an admin cancels it",
        )


def may_remove_from_org(account: EnterpriseAccount | None, org_id: int) -> None:
    """P5: an organisation's own enterprise account is never removed from it (it would be an
    identity of nobody's); an admin cancels it instead (``org.account.status``)."""
    if account is not None and account.org_id == org_id:
        raise ProtocolError(
            ErrorCode.ENTERPRISE_ACCOUNT_BOUND,
            "an enterprise account cannot be removed from its organisation: cancel it instead"
            " (org.account.status cancelled)",
        )


def may_ding_as(account: EnterpriseAccount | None) -> None:
    _refuse_control(account, "no_ding")


def may_go_live_as(account: EnterpriseAccount | None) -> None:
    _refuse_control(account, "no_live")


def login_refusal(account: EnterpriseAccount) -> tuple[str, ProtocolError] | None:
    """P5/O1: why a login with the right password is refused (the reason kept in the login
    record, and the error), or None."""
    if account.status != "active":
        return account.status, ProtocolError(
            ErrorCode.ACCOUNT_DISABLED, f"the account is {account.status}"
        )
    for control in ("frozen", "no_login"):
        if control in account.controls:
            code, message = _CONTROL_REFUSALS[control]
            return control, ProtocolError(code, message)
    return None


def may_manage_accounts(admin: OrgMember | None) -> OrgMember:
    """P5: an admin with ``members`` manages the organisation's enterprise accounts."""
    if admin is None or not admin.active:
        raise org_not_found()
    if not admin.may("members"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "this needs the 'members' permission")
    return admin


def may_create_account(admin: OrgMember | None, org: Organisation) -> OrgMember:
    """P5: only a verified organisation creates enterprise accounts."""
    admin = may_manage_accounts(admin)
    if not org.verified:
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "only a verified organisation creates enterprise accounts"
        )
    return admin


def account_in_org(account: EnterpriseAccount | None, org_id: int) -> EnterpriseAccount:
    """An organisation reaches only its own enterprise accounts (D6)."""
    if account is None or account.org_id != org_id:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such enterprise account")
    return account


def may_set_account_status(account: EnterpriseAccount, status: AccountStatus) -> None:
    """P5: a cancelled account stays cancelled."""
    if account.status == "cancelled" and status != "cancelled":
        raise ProtocolError(ErrorCode.INVALID_STATE, "a cancelled account stays cancelled")


def closes_connections(before: EnterpriseAccount, after: EnterpriseAccount) -> bool:
    """Disabling, banning, cancelling or freezing an account ends its sessions."""
    if before.active and not after.active:
        return True
    return bool((after.controls - before.controls) & _CLOSING_CONTROLS)


def may_verify_person(*, verifier_says: bool) -> None:
    """O3: only the verifier (by default the operator's command) verifies a person."""
    if not verifier_says:
        raise ProtocolError(
            ErrorCode.VERIFICATION_REQUIRED,
            "real-person verification is done by the operator (rivet org verify-person)",
        )
