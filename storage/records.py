"""Frozen records the stores take and return (never raw rows).

Times are integer milliseconds since the Unix epoch, UTC (wall clock; see ``server.clock``).
``body`` fields are opaque bytes the server encoded (MessagePack); stores never look inside.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# --- personal domain (D1) -------------------------------------------------------------------


class User(msgspec.Struct, frozen=True, kw_only=True):
    user_id: int
    phone: str
    display_name: str
    created_at: int
    #: Bumped by logout_all: access and refresh tokens of older generations are refused (A2).
    token_generation: int = 0
    suspended: bool = False
    #: A1: the account was deleted (its data is being, or has been, erased).
    deleted: bool = False


class Device(msgspec.Struct, frozen=True, kw_only=True):
    device_id: int
    user_id: int
    name: str
    created_at: int
    last_seen_at: int
    #: What the device acknowledged it received: positions in the two streams.
    acked_conversations: int = 0
    acked_personal: int = 0
    acked_organisation: int = 0


class RefreshSession(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    user_id: int
    device_id: int
    #: Keyed MAC of the refresh secret; the secret itself is never stored.
    secret_mac: bytes
    generation: int
    expires_at: int


LoginCodeOutcome = Literal["ok", "wrong", "expired", "missing", "exhausted"]


ContactStateName = Literal["requested", "pending", "accepted", "declined", "blocked"]


class ContactRow(msgspec.Struct, frozen=True, kw_only=True):
    """``owner``'s view of ``peer``. ``requested``: owner asked peer; ``pending``: peer asked
    owner; ``blocked``: owner blocks peer. A row written with state ``None`` is deleted."""

    owner: int
    peer: int
    state: ContactStateName | None
    note: str = ""
    updated_at: int = 0


class ContactWrite(msgspec.Struct, frozen=True, kw_only=True):
    """One row to write together with the change-stream entry its owner will see."""

    row: ContactRow
    event_body: bytes


class PersonalChange(msgspec.Struct, frozen=True, kw_only=True):
    """An entry in a user's personal change stream (contacts, settings)."""

    pstream: int
    user_id: int
    body: bytes


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    user_id: int
    notifications: bool = True
    muted_conversations: frozenset[str] = frozenset()


class IdempotencyKey(msgspec.Struct, frozen=True, kw_only=True):
    """(sender, client id): a resend with the same key returns the first result and stores
    nothing; the same key with another ``fingerprint`` is an ``IdempotencyConflict``."""

    sender: int
    client_id: str
    fingerprint: bytes


# --- cross domain (D3): conversations -----------------------------------------------------

ConversationKindName = Literal["direct", "self", "group"]
RoleName = Literal["owner", "admin", "member"]
EntryKind = Literal["message", "system", "recall", "read"]


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    conv_id: str
    kind: ConversationKindName
    title: str
    owner_id: int | None
    created_at: int
    member_limit: int
    mute_all: bool = False
    history_visible: bool = False
    #: Highest sequence number given out (0 before the first entry).
    last_seq: int = 0
    #: Stream position of the newest entry of any kind in this conversation.
    last_stream: int = 0
    #: Current (not departed) members.
    member_count: int = 0


class Member(msgspec.Struct, frozen=True, kw_only=True):
    conv_id: str
    user_id: int
    role: RoleName
    muted: bool = False
    #: First sequence number this member may see (their join point, or 1 when the group
    #: shows history to new members).
    visible_from: int = 1
    #: The seq at which they left or were removed (they see that entry); None while current.
    left_seq: int | None = None
    #: Read position: everything up to and including this seq is read.
    read_seq: int = 0
    #: The (first, last) seq ranges of their earlier memberships, ascending, each ending
    #: before ``visible_from``: left (or removed from) a group that hides its history and
    #: added back, they still see what they saw before (M1), not what was said while away.
    earlier: tuple[tuple[int, int], ...] = ()

    @property
    def active(self) -> bool:
        return self.left_seq is None

    @property
    def ranges(self) -> tuple[tuple[int, int | None], ...]:
        """Every (first, last) seq range the user sees, ascending: the earlier memberships,
        then this one (``last`` None while current)."""
        return (*self.earlier, (self.visible_from, self.left_seq))

    def sees(self, seq: int) -> bool:
        """The visibility rule of ``CrossDomainStore``: ``seq`` lies in one of ``ranges``."""
        if self.visible_from <= seq and (self.left_seq is None or seq <= self.left_seq):
            return True
        return any(first <= seq <= last for first, last in self.earlier)

    def first_seen_after(self, seq: int) -> int | None:
        """The lowest seq above ``seq`` that the user sees (None if there is none up to
        ``left_seq``): where the messages a read position moving from ``seq`` passes over
        begin."""
        for first, last in self.ranges:
            if last is None or last > seq:
                return max(first, seq + 1)
        return None


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the conversation stream.

    ``message`` and ``system`` entries take the next ``seq`` of their conversation (gap-free,
    strictly increasing) and their ``stream`` doubles as the message id. ``recall`` and
    ``read`` entries take no seq of their own: ``seq`` names the message recalled, or the new
    read position. Every entry has a ``stream`` position, unique and increasing across the
    whole store, in commit order.
    """

    stream: int
    conv_id: str
    seq: int
    kind: EntryKind
    sender: int
    ts: int
    cmid: str | None = None
    body: bytes | None = None
    recalled: bool = False


class NewConversation(msgspec.Struct, frozen=True, kw_only=True):
    """Create the conversation in the same transaction if it does not exist yet."""

    conv_id: str
    kind: ConversationKindName
    title: str
    owner_id: int | None
    member_limit: int
    history_visible: bool = False
    members: tuple[tuple[int, RoleName], ...] = ()


class MemberChange(msgspec.Struct, frozen=True, kw_only=True):
    """``add`` (re)admits a user; ``remove`` marks them departed at the new seq; ``update``
    sets role and/or muted on a current member. ``history_from_start``: an added member sees
    from seq 1 instead of from their joining entry."""

    user_id: int
    op: Literal["add", "remove", "update"]
    role: RoleName | None = None
    muted: bool | None = None
    history_from_start: bool = False


class ConversationChange(msgspec.Struct, frozen=True, kw_only=True):
    """Conversation fields to set; None leaves a field as it is."""

    title: str | None = None
    owner_id: int | None = None
    mute_all: bool | None = None
    history_visible: bool | None = None
    member_limit: int | None = None


class NewEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A ``message`` or ``system`` entry to append, with what it changes, atomically."""

    conv_id: str
    kind: Literal["message", "system"]
    sender: int
    ts: int
    body: bytes
    cmid: str | None = None
    idempotency: IdempotencyKey | None = None
    create: NewConversation | None = None
    #: Fail with NotAMember unless this user is a current member at commit time.
    require_member: int | None = None
    member_changes: tuple[MemberChange, ...] = ()
    conversation_change: ConversationChange | None = None
    #: Effects on other stores this entry causes (e.g. ``"org_copy"``): recorded in the same
    #: transaction, carried out later by the server's outbox relay (never half-done).
    effects: tuple[str, ...] = ()


class Appended(msgspec.Struct, frozen=True, kw_only=True):
    entry: Entry
    conversation: Conversation
    #: True when the idempotency key was seen before: ``entry`` is the original, and
    #: nothing was written.
    duplicate: bool = False


class Recall(msgspec.Struct, frozen=True, kw_only=True):
    entry: Entry
    duplicate: bool = False


class ReadMoved(msgspec.Struct, frozen=True, kw_only=True):
    """The result of moving a read position. ``entry`` is None when it did not move."""

    entry: Entry | None
    read_seq: int
    unread: int


class ReadCount(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    read: int
    unread: int


class PendingEffect(msgspec.Struct, frozen=True, kw_only=True):
    """An effect recorded with an entry and not yet carried out."""

    effect_id: int
    kind: str
    entry: Entry


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    conversation: Conversation
    member: Member
    unread: int
    last_message: Entry | None
