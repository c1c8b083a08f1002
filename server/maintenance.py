"""Periodic upkeep: forget idempotency keys once they are older than their promised life."""

from __future__ import annotations

import logging

import trio

from protocol import limits
from server.clock import Clock
from storage.stores import Stores

log = logging.getLogger(__name__)

#: Keys live at least IDEMPOTENCY_TTL_SECONDS; pruning runs this often, so at most this
#: much longer.
PRUNE_INTERVAL_SECONDS = 3600.0


async def prune_idempotency_keys(
    stores: Stores,
    clock: Clock,
    *,
    interval: float = PRUNE_INTERVAL_SECONDS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    while True:
        await trio.sleep(interval)
        cutoff = clock.now_ms() - limits.IDEMPOTENCY_TTL_SECONDS * 1000
        try:
            removed = 0
            for conversations in stores.conversation_stores():
                removed += await conversations.prune_idempotency(older_than=cutoff)
            removed += await stores.personal.prune_idempotency(older_than=cutoff)
        except Exception:
            log.exception("pruning idempotency keys failed; will retry")
            continue
        log.info("pruned idempotency keys", extra={"removed": removed})
