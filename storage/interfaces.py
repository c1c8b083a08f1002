"""The store interfaces, one per data domain (rules D1-D3).

Every implementation runs ``tests/storage/conformance.py``. Contracts that hold for all of
them:

* Each method is one transaction in one database (a store never writes two databases at
  once; effects across stores go through the server's outbox).
* A write method returns only after its transaction is durable under the store's
  configured durability (SQLite: ``synchronous=FULL`` in WAL mode, so an acknowledged write
  survives a process crash and, on honest disks, power loss).
* If a write raises, nothing of it was stored. ``StorageFull`` means the disk or database
  was full; the write may be retried.
* Cancellation: a write cancelled while waiting may still commit (the caller cannot know);
  that is why every retried client write carries an idempotency key.
* Stores decide nothing about who may see what: the router classifies, the store keeps.
  The only checks a store makes are the integrity ones documented on each method
  (idempotency, uniqueness, ``require_member``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.records import (
    Appended,
    ContactRow,
    ContactWrite,
    Conversation,
    Device,
    Entry,
    IdempotencyKey,
    LoginCodeOutcome,
    Member,
    NewEntry,
    PendingEffect,
    PersonalChange,
    ReadCount,
    ReadMoved,
    Recall,
    RefreshSession,
    Settings,
    Summary,
    User,
)


class PersonalStore(Protocol):
    """D1: users, devices, sessions, login codes, contacts, settings, the personal stream.

    Nothing here is ever visible to an organisation (D1 decision: contacts stay personal).
    """

    # users
    async def create_user(self, *, phone: str, display_name: str, now: int) -> User:
        """Create a user with the next user id. ``AlreadyExists`` if the phone is taken."""

    async def get_user(self, user_id: int) -> User | None: ...
    async def get_user_by_phone(self, phone: str) -> User | None: ...
    async def get_users(self, user_ids: Sequence[int]) -> list[User]:
        """The users that exist among ``user_ids``, in ascending id order."""

    async def set_display_name(self, user_id: int, display_name: str) -> None: ...

    async def bump_token_generation(self, user_id: int) -> int:
        """Invalidate every token issued so far (A2 logout_all); returns the new generation
        and deletes the user's refresh sessions."""

    async def set_suspended(self, user_id: int, suspended: bool) -> bool:
        """C1: set or clear the user's ``suspended`` flag (a platform moderator's act). False
        if there is no such user. Tokens are kept: the server refuses them while the flag is
        set, and they work again once it is cleared."""

    # devices
    async def register_device(self, *, user_id: int, name: str, now: int) -> Device:
        """A new device with the next device id."""

    async def get_device(self, device_id: int) -> Device | None: ...
    async def list_devices(self, user_id: int) -> list[Device]:
        """The user's devices in ascending id order."""

    async def touch_device(self, device_id: int, *, now: int) -> None:
        """Record that the device was seen (connected) at ``now``."""

    async def touch_devices(self, seen: Sequence[tuple[int, int]]) -> None:
        """Record several (device id, seen at) in one transaction. A device's time never
        moves backwards (the later of the stored and the given one is kept); unknown
        devices are skipped."""

    async def ack_device(
        self, device_id: int, *, conversations: int, personal: int, organisation: int = 0
    ) -> None:
        """Record what the device received (the three positions of a sync token). Positions
        never move backwards: each is set to the larger of the stored and the given value."""

    # refresh sessions
    async def put_refresh_session(self, session: RefreshSession) -> None:
        """Insert or replace the session with this ``session_id``."""

    async def get_refresh_session(self, session_id: str) -> RefreshSession | None: ...

    async def rotate_refresh_session(
        self, session_id: str, *, old_mac: bytes, new_mac: bytes, expires_at: int
    ) -> bool:
        """Compare-and-set: replace the secret MAC only if it still equals ``old_mac``
        (compared in constant time). False if it did not (a reused refresh token) or the
        session is gone."""

    async def delete_refresh_session(self, session_id: str) -> None: ...

    # one-time login codes (A2: stored as a keyed MAC, never in plain text)
    async def put_login_code(self, *, phone: str, mac: bytes, expires_at: int) -> None:
        """Store the code's MAC for ``phone``, replacing any earlier code (attempts reset)."""

    async def consume_login_code(
        self, *, phone: str, mac: bytes, now: int, max_attempts: int
    ) -> LoginCodeOutcome:
        """Atomically check a code: ``missing`` if there is none; ``expired`` (and deleted)
        if ``now >= expires_at``; ``exhausted`` if ``max_attempts`` wrong tries were already
        made; ``ok`` (and deleted: single use) if ``mac`` matches in constant time; else the
        attempt is counted and the result is ``wrong``, or ``exhausted`` when that attempt
        reached ``max_attempts``."""

    # QR contact tokens (stored by a hash of the token)
    async def put_qr_token(self, *, token_hash: bytes, user_id: int, expires_at: int) -> None: ...
    async def resolve_qr_token(self, *, token_hash: bytes, now: int) -> int | None:
        """The user id behind an unexpired token, or None."""

    # contacts (M5)
    async def get_contact(self, owner: int, peer: int) -> ContactRow | None: ...
    async def list_contacts(self, owner: int) -> list[ContactRow]:
        """``owner``'s contact rows in ascending peer order."""

    async def contacts_naming(self, peer: int) -> list[ContactRow]:
        """Every other user's row about ``peer`` (``row.peer == peer``), in ascending owner
        order: whom to tell when ``peer``'s account is erased (A1), blocks included."""

    async def accepted_contacts(self, owner: int) -> list[int]:
        """The peers of ``owner``'s contacts in state ``accepted``, ascending (presence's
        audience needs only these, not the rows)."""

    async def write_contacts(
        self,
        writes: Sequence[ContactWrite],
        *,
        now: int,
        idempotency: IdempotencyKey | None = None,
    ) -> tuple[list[PersonalChange], bool]:
        """Upsert (or delete, for state None) each row and append one personal-stream entry
        for the row's owner with ``event_body``, in one transaction. With ``idempotency``: a
        key seen before returns the changes written then and True, writing nothing;
        ``IdempotencyConflict`` if its fingerprint differs. Returns (changes, duplicate)."""

    # settings (M3)
    async def get_settings(self, user_id: int) -> Settings:
        """The user's settings, defaults if never set."""

    async def write_settings(
        self,
        user_id: int,
        *,
        notifications: bool | None = None,
        mute_conversation: tuple[str, bool] | None = None,
        event_body: bytes,
        now: int,
    ) -> PersonalChange:
        """Change settings and append one personal-stream entry for the user."""

    # the personal stream
    async def personal_changes(
        self, user_id: int, *, after: int, limit: int
    ) -> list[PersonalChange]:
        """The user's entries with ``pstream > after``, ascending, at most ``limit``."""

    async def personal_head(self) -> int:
        """The highest personal-stream position committed so far (0 when empty)."""

    async def prune_idempotency(self, *, older_than: int) -> int:
        """Forget idempotency keys recorded before ``older_than``; returns how many."""

    # personal account deletion (A1)
    async def begin_deletion(self, user_id: int, *, now: int) -> User:
        """Mark the account deleted: every session ends (the token generation moves, refresh
        sessions go), the phone number is released for a new registration, the display name
        is cleared. Idempotent. ``KeyError`` if there is no such user."""

    async def pending_deletions(self) -> list[int]:
        """Deleted accounts whose erasure has not finished, ascending."""

    async def dormant_users(
        self, *, seen_before: int, after_user: int, limit: int
    ) -> list[tuple[User, int]]:
        """P6: accounts (not deleted) whose last sign-in — the latest ``last_seen_at`` of
        their devices, or their creation when they have none — is before ``seen_before``,
        with that time, ascending by user id, ``user_id > after_user``, at most ``limit``."""

    async def erase_personal_data(self, user_id: int) -> None:
        """The last step of A1: delete the user's devices, contacts (both sides), settings,
        QR tokens, login codes and personal-stream entries, and mark the erasure finished."""


class CrossDomainStore(Protocol):
    """D3: single chats, ordinary groups, chat with oneself, and their stream.

    Visibility rule used by the read methods below, for a member M of conversation C: M sees
    entries of C whose seq (a ``recall``'s or ``read``'s: the seq it names) lies in one of
    ``M.ranges``: the current membership's (``M.visible_from <= seq`` and, if M left,
    ``seq <= M.left_seq``) or one of ``M.earlier`` (``Member.sees``); ``read`` entries only
    when written by M or when C is not a group.
    """

    async def append(self, entry: NewEntry) -> Appended:
        """Append a ``message`` or ``system`` entry, atomically with its effects:

        1. With ``entry.idempotency``: if the key was recorded, return the original entry
           with ``duplicate=True`` and write nothing; if its fingerprint differs, raise
           ``IdempotencyConflict``.
        2. With ``entry.create``: create the conversation (and its members, all visible from
           seq 1) if it does not exist; if it exists, ignore ``create``.
           Without it, ``ConversationMissing`` if the conversation does not exist.
        3. With ``entry.require_member``: ``NotAMember`` unless that user is a current member.
        4. Give the entry ``seq = last_seq + 1`` and the next stream position; store it.
        5. Apply ``member_changes`` (an added member becomes visible from the new seq, or 1
           with ``history_from_start``; a removed one gets ``left_seq`` = the new seq; a
           former member added again keeps their read position and, unless
           ``history_from_start`` covers them, the ranges they saw before in ``earlier``) and
           ``conversation_change``; keep ``member_count`` right.
        6. For a ``message``, move the sender's read position to the new seq.
        7. Record the idempotency key with the entry.
        8. Record one pending effect per name in ``entry.effects``, naming the new entry.

        Cancelled, it either stores nothing and raises ``Cancelled``, or stores the entry
        and returns its result, the cancellation then landing at the caller's next
        checkpoint: never both stored and unreported, so a caller that must act on a commit
        (publish the message) needs no shielded scope of its own around the call.
        """

    async def recorded(self, key: IdempotencyKey) -> Appended | None:
        """The write recorded under ``key``, as ``append`` returns a duplicate (the original
        entry as it is now, ``duplicate`` True), or None if the key is new.
        ``IdempotencyConflict`` if it was recorded with another fingerprint."""

    async def pending_effects(self, *, after: int, limit: int) -> list[PendingEffect]:
        """Effects not yet finished with ``effect_id > after``, oldest first, each with its
        entry as it is now (a recalled entry has no body)."""

    async def finish_effect(self, effect_id: int) -> None:
        """Forget a carried-out effect (finishing one twice is harmless)."""

    async def recall(self, *, conv_id: str, seq: int, by: int, now: int) -> Recall:
        """Erase the content of message ``seq`` (its body becomes None, ``recalled`` True;
        the seq stays) and append a ``recall`` entry naming it. Recalling a message already
        recalled returns the first recall entry with ``duplicate=True``. ``ConversationMissing``
        if there is no ``message`` entry at that seq."""

    async def mark_read(self, *, conv_id: str, user_id: int, seq: int, now: int) -> ReadMoved:
        """Move the member's read position forward to ``min(seq, last_seq)`` and append a
        ``read`` entry; a position that would not move appends nothing (``entry`` None).
        ``NotAMember`` unless ``user_id`` is a current member."""

    async def get_conversation(self, conv_id: str) -> Conversation | None: ...

    async def get_member(self, conv_id: str, user_id: int) -> Member | None:
        """The membership row, including a departed member's (``left_seq`` set), with the
        ranges of their earlier memberships (``earlier``)."""

    async def list_members(self, conv_id: str, *, after_user: int, limit: int) -> list[Member]:
        """Current members with ``user_id > after_user`` in ascending user id order."""

    async def member_ids(self, conv_id: str) -> list[int]:
        """Every current member's user id, ascending (for fan-out)."""

    async def joined_after(self, conv_id: str, seq: int) -> list[int]:
        """The current members who cannot see message ``seq`` because their membership
        starts after it (``visible_from > seq``: added later to a group that hides its
        history) and no earlier membership of theirs saw it, ascending. Few, and found by an
        index: a recall's audience is the current members less these."""

    async def memberships(self, user_id: int) -> list[Member]:
        """Every membership row of the user, departed ones included."""

    async def membership_ids(self, user_id: int) -> list[str]:
        """The conversation ids of ``memberships``, ascending (presence's audience needs only
        these, not the rows)."""

    async def get_entry(self, conv_id: str, seq: int) -> Entry | None:
        """The ``message`` or ``system`` entry at ``seq``."""

    async def history(
        self,
        conv_id: str,
        *,
        visible_from: int,
        visible_to: int | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Entry]:
        """``message`` and ``system`` entries with ``visible_from <= seq < before_seq`` (and
        ``seq <= visible_to`` when given), the newest ``limit`` of them, in ascending seq.
        One range: a member who sees several (``Member.ranges``) is served range by range."""

    async def entries_for(self, user_id: int, *, after: int, limit: int) -> list[Entry]:
        """Entries visible to the user (see the class docstring) in every conversation they
        are or were a member of, with ``stream > after``, ascending by stream, at most
        ``limit``."""

    async def summaries(self, user_id: int, *, changed_after: int) -> list[Summary]:
        """For each membership of the user whose conversation has ``last_stream >
        changed_after``: the conversation, the membership, the unread count (visible
        ``message`` entries above ``read_seq`` not sent by the user and not recalled) and the
        newest visible ``message`` or ``system`` entry. Ordered by ``last_stream``, newest
        first. Unread messages of an earlier membership above ``read_seq`` count too."""

    async def read_counts(self, conv_id: str, seqs: Sequence[int]) -> list[ReadCount]:
        """For each existing message seq: how many current members other than its sender
        that can see it (in any of their ranges) have read it (``read_seq >= seq``) and how
        many have not. Computed from read positions: no row per message per member. Missing
        seqs are skipped."""

    async def readers(
        self, conv_id: str, seq: int, *, read: bool, after_user: int, limit: int
    ) -> list[int]:
        """User ids (ascending, ``> after_user``) of current members other than the sender
        who see ``seq`` (in any of their ranges) and have (``read``) or have not read it."""

    async def head(self) -> int:
        """The highest stream position committed so far (0 when empty)."""

    async def next_group_number(self) -> int:
        """A fresh number for a group id, never handed out before."""

    async def prune_idempotency(self, *, older_than: int) -> int:
        """Forget idempotency keys recorded before ``older_than``; returns how many."""

    async def count_conversations(self, id_prefix: str) -> int:
        """How many conversations have an id starting with ``id_prefix`` (O4's summary)."""

    async def delete_conversations(self, id_prefix: str, *, limit: int) -> int:
        """O4: delete, in one transaction, a batch of about ``limit`` rows (a backend may
        round up to whole small conversations) of the conversations whose id starts with
        ``id_prefix`` (their entries, pending effects and idempotency keys, then
        their members, then the conversations themselves). Returns how many rows went; 0
        means none of them is left. Called again until it returns 0, so a crash between two
        calls loses nothing (the next call deletes what is left)."""

    async def erase_sender(self, user_id: int, *, now: int, limit: int) -> list[Entry]:
        """A1: tombstone up to ``limit`` of the user's messages that still have content, as
        ``recall`` does (body erased, seq kept, a ``recall`` entry by the user appended), in
        one transaction. Returns the recall entries; an empty list means none are left."""
