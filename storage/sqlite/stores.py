"""Open the SQLite stores in a data directory: one database file per data domain.

Layout (``docs/domains.md``)::

    <data_dir>/            mode 0700
        personal.db        D1: users, devices, sessions, contacts, settings, personal stream
        cross.db           D3: single chats, ordinary groups, chat with oneself
        organisations.db   D2: organisations, members, copies, audit logs; rows keyed by
                           organisation (docs/storage-organisations.md)
        organisation-conversations.db
                           D2: organisation-internal conversations (ids o:<org>:...), the
                           cross-domain schema with rows keyed by organisation through the id
        moderation.db      C1: reports and the moderators' act log (platform data)

Each database has its own writer thread and reader pool; a write never spans two of them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from storage.sqlite.consent import SqliteConsentStore
from storage.sqlite.cross import SqliteCrossDomainStore
from storage.sqlite.database import DatabaseOptions, open_database
from storage.sqlite.ding import SqliteDingStore
from storage.sqlite.keys import SqliteKeyStore
from storage.sqlite.live import SqliteLiveStore
from storage.sqlite.moderation import SqliteModerationStore
from storage.sqlite.orgs import SqliteOrganisationStore
from storage.sqlite.personal import SqlitePersonalStore
from storage.sqlite.writer import DEFAULT_MAX_BATCH, DEFAULT_QUEUE_SIZE
from storage.stores import Stores

PERSONAL_DB = "personal.db"
CROSS_DB = "cross.db"
ORGANISATIONS_DB = "organisations.db"
MODERATION_DB = "moderation.db"
ORG_CONVERSATIONS_DB = "organisation-conversations.db"


@asynccontextmanager
async def open_sqlite_stores(
    data_dir: Path | str,
    *,
    synchronous: str = "FULL",
    max_page_count: int | None = None,
    readers: int = 4,
    max_batch: int = DEFAULT_MAX_BATCH,
    queue_size: int = DEFAULT_QUEUE_SIZE,
) -> AsyncIterator[Stores]:
    """The stores kept in ``data_dir`` (created with mode 0700 if missing), migrated to the
    current schema. ``SchemaTooNew`` if a database was written by a newer Rivet.

    ``synchronous`` is SQLite's ``PRAGMA synchronous`` (OFF, NORMAL, FULL or EXTRA); FULL, the
    default, makes an acknowledged write survive power loss on honest disks.

    ``max_page_count`` caps each database at that many pages (SQLITE_FULL, hence
    ``StorageFull``, past it): for tests and for operators who want a hard ceiling.
    On exit every queued write is committed, every thread joined, every connection closed.
    """
    options = DatabaseOptions(
        synchronous=synchronous.upper(),
        max_page_count=max_page_count,
        readers=readers,
        max_batch=max_batch,
        queue_size=queue_size,
    )
    root = Path(data_dir)
    await trio.to_thread.run_sync(_make_data_dir, root)
    async with (
        open_database(root / PERSONAL_DB, domain="personal", options=options) as personal,
        open_database(root / CROSS_DB, domain="cross", options=options) as cross,
        open_database(root / ORGANISATIONS_DB, domain="organisations", options=options) as orgs,
        open_database(root / MODERATION_DB, domain="moderation", options=options) as moderation,
        # Same schema as cross.db (the "cross" migrations), different domain: D2 data.
        open_database(root / ORG_CONVERSATIONS_DB, domain="cross", options=options) as org_convs,
    ):
        databases = (personal, cross, orgs, moderation, org_convs)

        def problems() -> list[str]:
            return [
                f"the writer of {db.path.name} stopped; writes to it are refused"
                for db in databases
                if db.writer.died
            ]

        yield Stores(
            personal=SqlitePersonalStore(personal),
            cross=SqliteCrossDomainStore(cross),
            ding=SqliteDingStore(cross),
            live=SqliteLiveStore(cross),
            orgs=SqliteOrganisationStore(orgs),
            consent=SqliteConsentStore(personal),
            moderation=SqliteModerationStore(moderation),
            keys=SqliteKeyStore(personal, orgs),
            org_conversations=SqliteCrossDomainStore(org_convs),
            org_ding=SqliteDingStore(org_convs, domain="org"),
            org_live=SqliteLiveStore(org_convs),
            problems=problems,
        )


def _make_data_dir(root: Path) -> None:
    # Private data: only the server's user may list or read it.
    if not root.exists():
        root.mkdir(mode=0o700, parents=True)
        os.chmod(root, 0o700)  # mkdir's mode is filtered by the umask
