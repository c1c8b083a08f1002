"""Versioned schema migrations, one folder of SQL files per domain.

``migrations/<domain>/NNNN_name.sql`` are applied in order, each in its own transaction
together with its row in ``schema_version``. A database whose schema is newer than this code
knows, or that belongs to another domain, is refused: the server does not start on data it
might misread (as Synapse refuses a misconfigured database).
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    domain     TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
)
"""


class SchemaError(RuntimeError):
    """The database cannot be used by this version of Rivet as it is."""


class SchemaTooNew(SchemaError):
    """The database was migrated by a newer Rivet than this one."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(domain: str) -> list[Migration]:
    """The domain's migrations in version order; versions must run 1, 2, 3... with no gap."""
    folder = resources.files("storage.sqlite").joinpath("migrations").joinpath(domain)
    if not folder.is_dir():
        raise SchemaError(f"no migrations for the {domain!r} domain")
    found: list[Migration] = []
    for item in folder.iterdir():
        match = _FILE_NAME.match(item.name)
        if match is None:
            continue
        found.append(Migration(int(match[1]), match[2], item.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise SchemaError(
                f"{domain} migrations: expected version {expected:04d}, "
                f"found {migration.version:04d}_{migration.name}.sql"
            )
    return found


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest migration applied (0 for a new database)."""
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    (version,) = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(version)


def migrate(conn: sqlite3.Connection, domain: str, *, path: str) -> int:
    """Bring the database on ``conn`` (in autocommit mode) to the newest schema of
    ``domain``; returns the version. ``SchemaTooNew`` or ``SchemaError`` if it is not ours.
    """
    migrations = load_migrations(domain)
    latest = len(migrations)
    conn.execute("BEGIN IMMEDIATE")  # another process may be migrating the same file
    try:
        conn.execute(_CREATE_SCHEMA_VERSION)
        _check_domain(conn, domain, path=path)
        current = schema_version(conn)
        if current > latest:
            raise SchemaTooNew(
                f"{path} has schema version {current} of the {domain} domain, but this version "
                f"of Rivet knows versions up to {latest}: upgrade Rivet (or restore a backup "
                f"made for this version) before starting"
            )
        for migration in migrations[current:]:
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, domain, name, applied_at) "
                "VALUES (?, ?, ?, ?)",
                (migration.version, domain, migration.name, time.time_ns() // 1_000_000),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return latest


def _check_domain(conn: sqlite3.Connection, domain: str, *, path: str) -> None:
    others = [
        other
        for (other,) in conn.execute(
            "SELECT DISTINCT domain FROM schema_version WHERE domain != ?", (domain,)
        )
    ]
    if others:
        raise SchemaError(f"{path} holds the {others[0]} domain, not the {domain} domain")


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would COMMIT midway)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip() and not _only_comments(pending):
        raise SchemaError(f"incomplete SQL statement at the end of a migration: {pending!r}")
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
