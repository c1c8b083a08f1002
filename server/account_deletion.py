"""A1: erasing a deleted personal account, as a resumable job.

``account.delete`` marks the account deleted (sessions end, the phone number is released)
in one transaction of the personal store (``AccountEraser.begin``, which dissolution, O4,
also uses for the organisation's enterprise accounts). This job then tombstones the user's
messages in the cross-domain store in chunks (each a transaction, each recall pushed to the
conversation's members), and finally erases the personal data and consent records (each
contact is first told, through their personal stream, that the contact is gone). An
account whose erasure was interrupted is found again at start and finished.
Organisations' copies are not touched: they were the organisations' when made (A1).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
import trio

from protocol.errors import CloseCode
from protocol.ids import conversation_kind
from server.background import Nudge, run_rounds
from server.clock import Clock
from server.contact_changes import contact_event, contact_write
from storage.interfaces import CrossDomainStore
from storage.keys import user_owner
from storage.records import Entry
from storage.stores import Stores

log = logging.getLogger(__name__)

CHUNK = 500

#: Tell a conversation's members that an entry was recalled.
PublishRecall = Callable[[Entry], Awaitable[None]]
#: Close every live connection of a user (in this process), with a close code and reason.
Disconnect = Callable[[int, int, str], None]
#: The erased user leaves this group or single chat, as a member who leaves
#: (``services.groups.depart``).
LeaveConversation = Callable[[str, int], Awaitable[None]]
#: Push an event to these users' connected devices (``server.context.publish_event``).
Publish = Callable[[list[int], msgspec.Struct], None]


class AccountEraser:
    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        *,
        publish_recall: PublishRecall,
        disconnect: Disconnect | None = None,
        publish: Publish | None = None,
        leave_conversation: LeaveConversation | None = None,
    ) -> None:
        self._stores = stores
        self._clock = clock
        self._publish_recall = publish_recall
        self._disconnect = disconnect
        self._publish = publish
        self._leave_conversation = leave_conversation
        self.kick = Nudge()
        self.erased = 0

    async def begin(self, user_id: int, *, reason: str) -> None:
        """A1 step one: mark the account deleted (one transaction: the token generation
        moves, refresh sessions and login codes go, the phone is released), close its live
        connections, and wake this job to erase the rest. Idempotent, so a resumed caller
        (dissolution, O4) may repeat it. ``KeyError`` if there is no such user."""
        await self._stores.personal.begin_deletion(user_id, now=self._clock.now_ms())
        if self._disconnect is not None:
            self._disconnect(user_id, CloseCode.SESSION_REVOKED, reason)
        self.kick()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await run_rounds(
            "account erasure", self.finish_all, self.kick, every=30, task_status=task_status
        )

    async def finish_all(self) -> None:
        for user_id in await self._stores.personal.pending_deletions():
            # A3: destroying the user's data keys first makes whatever they sealed (message
            # bodies, report evidence) unreadable at once, here and, once the master key is
            # changed, in backups (docs/encryption.md). Idempotent, so a resumed job repeats it.
            await self._stores.keys.destroy(user_owner(user_id), now=self._clock.now_ms())
            for conversations in self._stores.conversation_stores():
                while recalls := await conversations.erase_sender(
                    user_id, now=self._clock.now_ms(), limit=CHUNK
                ):
                    for recall in recalls:
                        await self._publish_recall(recall)
                await self._leave_conversations(conversations, user_id)
            await self._stores.consent.erase_user(user_id)
            await self._tell_contacts(user_id)
            await self._stores.personal.erase_personal_data(user_id)
            self.erased += 1
            log.info("account erased", extra={"user_id": user_id})

    async def _leave_conversations(self, conversations: CrossDomainStore, user_id: int) -> None:
        """A1: the erased user leaves every group and single chat they are still in, so
        that a group no longer counts them (its size, its capacity, the "unread" of read
        receipts) nor lists them, and a single chat with them takes no more messages.
        Idempotent: a resumed job finds those memberships ended."""
        if self._leave_conversation is None:
            return
        for member in await conversations.memberships(user_id):
            if member.active and conversation_kind(member.conv_id) in ("group", "direct"):
                await self._leave_conversation(member.conv_id, user_id)

    async def _tell_contacts(self, user_id: int) -> None:
        """A1 with M5: everyone who holds a row about the user (a contact, a request, a
        block) loses it through their personal stream (an ``ev.contact`` with state
        ``none`` each, which ``sync`` replays), as a removal would; erasing the rows alone
        left their devices showing the contact for good while ``contacts.list`` no longer
        did. Idempotent: a resumed job finds the rows already gone and writes nothing."""
        personal = self._stores.personal
        now = self._clock.now_ms()
        writes = [
            contact_write(row.owner, user_id, None, "", now)
            for row in await personal.contacts_naming(user_id)
        ]
        if not writes:
            return
        changes, _ = await personal.write_contacts(writes, now=now)
        if self._publish is not None:
            # Their connected devices learn it now, as after a removal, not at a next sync.
            for write, change in zip(writes, changes, strict=True):
                self._publish([write.row.owner], contact_event(write, change.pstream))
