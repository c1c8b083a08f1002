"""Platform moderation (C1): the operators' acts, and how they reach a running server.

Acts are operator commands (``rivet moderate``, ``server/cli_moderate.py``) that work on a
data directory, like ``rivet users``, whether or not a server is running on it. Each act is
applied first, then written to the act log (``storage.moderation``): what is in the log has
happened. An act whose command failed midway is re-run as is; applying it again changes
nothing (a recall of a recalled message is a no-op, a flag set twice stays set).

* **hide**: the message is withdrawn from its conversation for everyone (a tombstone, as a
  recall: the seq stays, the content goes, members get ``ev.recall`` with ``by`` 0); the
  platform keeps its content in the act log, for review and appeal.
* **remove**: withdrawn the same way, and the platform keeps no copy: the act holds none and
  the evidence of the reports naming the message is erased.
* **suspend** / **unsuspend**: set or clear the account's ``suspended`` flag. While it is
  set, every login and token is refused (2005, then close 4005) and open connections close.
* **dismiss**: close reports without acting on them.

A running server learns of acts made by another process by polling the log
(``ModerationWatcher``, every ``moderation_poll_seconds``): it closes a suspended user's
connections with 4005 and pushes ``ev.recall`` for withdrawn messages to connected members.
Polling a small table every few seconds costs nothing and needs no channel between the
command and the server, and it works the same with several server processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final, Literal

import trio

from protocol.errors import CloseCode
from server import policy
from server.background import REFUSED, Outage
from server.bus import Disconnect
from server.context import Context
from server.domains import conversation_store
from server.metrics import METRICS
from server.services.render import entry_event
from storage.errors import StoreError
from storage.moderation import ActRecord, NewAct
from storage.stores import Stores

log = logging.getLogger(__name__)

#: The ``by`` of a recall made by the platform's moderators (no user has id 0).
PLATFORM: Final = 0
#: Acts read from the log per poll.
POLL_BATCH: Final = 200


class ModerationError(Exception):
    """An act that cannot be done: no such message, user or report."""


async def act_on_message(
    stores: Stores,
    *,
    action: Literal["hide", "remove"],
    conv_id: str,
    seq: int,
    operator: str,
    reason: str,
    report_ids: Sequence[int] = (),
    now: int,
) -> ActRecord:
    """Hide or remove message ``seq`` of ``conv_id`` (see the module docstring)."""
    conversations = conversation_store(stores, conv_id)
    entry = await conversations.get_entry(conv_id, seq)
    if entry is None or entry.kind != "message":
        raise ModerationError(f"no message {seq} in {conv_id}")
    await _check_reports(stores, report_ids)
    evidence = entry.body if action == "hide" and not entry.recalled else None
    await conversations.recall(conv_id=conv_id, seq=seq, by=PLATFORM, now=now)
    return await _log(
        stores,
        NewAct(
            action=action,
            operator=operator,
            reason=reason,
            target_user=entry.sender,
            conv_id=conv_id,
            seq=seq,
            evidence=evidence,
            report_ids=tuple(report_ids),
            created_at=now,
        ),
    )


async def set_suspension(
    stores: Stores,
    *,
    user_id: int,
    suspended: bool,
    operator: str,
    reason: str,
    report_ids: Sequence[int] = (),
    now: int,
) -> ActRecord:
    """Suspend or unsuspend an account."""
    await _check_reports(stores, report_ids)
    if not await stores.personal.set_suspended(user_id, suspended):
        raise ModerationError(f"no user {user_id}")
    return await _log(
        stores,
        NewAct(
            action="suspend" if suspended else "unsuspend",
            operator=operator,
            reason=reason,
            target_user=user_id,
            report_ids=tuple(report_ids),
            created_at=now,
        ),
    )


async def dismiss(
    stores: Stores, *, report_ids: Sequence[int], operator: str, reason: str, now: int
) -> ActRecord:
    """Close reports without acting on them."""
    if not report_ids:
        raise ModerationError("name at least one report")
    await _check_reports(stores, report_ids)
    return await _log(
        stores,
        NewAct(
            action="dismiss",
            operator=operator,
            reason=reason,
            report_ids=tuple(report_ids),
            created_at=now,
        ),
    )


async def _check_reports(stores: Stores, report_ids: Sequence[int]) -> None:
    for report_id in report_ids:
        if await stores.moderation.get_report(report_id) is None:
            raise ModerationError(f"no report {report_id}")


async def _log(stores: Stores, act: NewAct) -> ActRecord:
    record = await stores.moderation.record_act(act)
    # Ids only: never the content, the reason text or the evidence.
    log.info(
        "moderation act",
        extra={
            "act_id": record.act_id,
            "action": record.action,
            "operator": record.operator,
            "target_user": record.target_user,
            "conv": record.conv_id,
            "seq": record.seq,
            "reports": list(record.report_ids),
        },
    )
    return record


class ModerationWatcher:
    """Applies acts made by other processes to this server's live connections."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._last = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll the log until cancelled. Acts older than the server need nothing: their
        effects are in the stores, which every login and sync reads."""
        store = self._ctx.stores.moderation
        self._last = await store.last_act_id()
        outage = Outage("moderation watcher")
        wait = self._ctx.config.moderation_poll_seconds
        task_status.started()
        while True:
            await trio.sleep(wait)
            wait = self._ctx.config.moderation_poll_seconds
            try:
                await self.poll()
            except REFUSED as error:
                # An act's write (a recall) was refused: logged once, retried with backoff.
                wait = max(wait, outage.refused(error))
            except StoreError:
                log.warning("moderation log unreadable; retrying", exc_info=True)
            else:
                outage.over()

    async def poll(self) -> int:
        """Apply every act logged since the last poll; returns how many."""
        acts = await self._ctx.stores.moderation.acts(after_id=self._last, limit=POLL_BATCH)
        for act in acts:
            await self._apply(act)
            self._last = act.act_id
        return len(acts)

    async def _apply(self, act: ActRecord) -> None:
        METRICS.moderation_acts.inc(act.action)
        if act.action == "suspend" and act.target_user is not None:
            disconnect = Disconnect(code=CloseCode.ACCOUNT_SUSPENDED, reason="account suspended")
            self._ctx.bus.publish([act.target_user], disconnect)
        elif act.action in ("hide", "remove") and act.conv_id and act.seq is not None:
            await self._tell_members(act.conv_id, act.seq)

    async def _tell_members(self, conv_id: str, seq: int) -> None:
        cross = self._ctx.conversations(conv_id)
        conversation = await cross.get_conversation(conv_id)
        if conversation is None:
            return
        # Recalling again writes nothing and returns the recall entry the act made.
        recall = await cross.recall(
            conv_id=conv_id, seq=seq, by=PLATFORM, now=self._ctx.clock.now_ms()
        )
        members = await self._ctx.members.seeing(conv_id, seq)
        recipients = policy.entry_recipients(conversation, recall.entry, members, departed=())
        self._ctx.publish_entry(recall.entry, recipients, entry_event(recall.entry))
