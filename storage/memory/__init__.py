"""The in-memory stores: the reference implementation of ``storage.interfaces``.

Unit tests of the server run on these; every other backend must behave the same, which the
conformance suite in ``tests/storage`` checks (house habit 7). Nothing survives the process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from storage.memory.consent import MemoryConsentStore
from storage.memory.cross import MemoryCrossDomainStore
from storage.memory.ding import MemoryDingStore
from storage.memory.keys import MemoryKeyStore
from storage.memory.live import MemoryLiveStore
from storage.memory.moderation import MemoryModerationStore
from storage.memory.orgs import MemoryOrganisationStore
from storage.memory.personal import MemoryPersonalStore
from storage.stores import Stores

__all__ = ["MemoryCrossDomainStore", "MemoryPersonalStore", "open_memory_stores"]


@asynccontextmanager
async def open_memory_stores() -> AsyncIterator[Stores]:
    """Fresh, empty stores; each is its own "database", as the SQLite ones are."""
    yield Stores(
        personal=MemoryPersonalStore(),
        cross=MemoryCrossDomainStore(),
        ding=MemoryDingStore(),
        live=MemoryLiveStore(),
        orgs=MemoryOrganisationStore(),
        consent=MemoryConsentStore(),
        moderation=MemoryModerationStore(),
        keys=MemoryKeyStore(),
        org_conversations=MemoryCrossDomainStore(),
        org_ding=MemoryDingStore(domain="org"),
        org_live=MemoryLiveStore(),
    )
