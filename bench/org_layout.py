"""Organisation storage: one SQLite file per organisation, or one shared file, measured.

``python -m bench.org_layout [--orgs 1000] [--messages-per-org 200] [--repeat 3] [--json PATH]``

The organisation domain must be exportable and deletable one organisation at a time (O4).
Three layouts, the same small schema (messages with member, conversation, time and a ~200-byte
body; audit rows), the server's own connection settings (``storage.sqlite.database.connect``:
WAL, ``synchronous=FULL``):

* **A**: one file per organisation, ``org-NNNNNN.db``; the server would reach them through a
  pool (an LRU) of open connections.
* **B**: one shared file, every row carries ``org_id`` and every index leads with it; rows
  sit in arrival order (rowid tables).
* **B2**: the same, clustered by organisation: WITHOUT ROWID tables whose primary key leads
  with ``org_id`` (as ``storage/sqlite``'s ``org_copies``), so one organisation's rows share
  pages.

Each repetition builds all three from nothing in a temporary directory (removed afterwards)
and measures, in order: creating the organisations (one transaction each); loading the seed
rows; group commit of 100-row batches spread over random organisations (A: one commit, so one
WAL fsync, per touched file, with every writer open, with several threads, with an LRU of
writers, or opening on demand; B and B2: one commit per batch); opening and closing one
organisation's file, file descriptors and memory with all of them open; reading one
organisation's recent rows; exporting one organisation (streamed as JSON lines); backups;
deleting one organisation (A: unlink the file, its ``-wal`` and ``-shm``; B and B2:
``DELETE ... WHERE org_id = ?`` with and without ``secure_delete``, then ``VACUUM``); and what
is left of the deleted organisations' rows in the files and in the backups taken before. Every
body carries its organisation's marker ``<oNNNNNN>``, so "what is left" is a byte search.

Correctness is checked, not assumed: an export must hold exactly the rows committed for that
organisation (count and an order-free checksum) and none of another; after a delete, no row of
that organisation may be readable. A failed check stops the run (``LayoutCheckFailed``).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import random
import re
import shlex
import sqlite3
import string
import sys
import tempfile
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench import stats
from bench.harness import machine_info, versions
from bench.report import write_json
from bench.runner import RESULTS_DIR
from storage.sqlite.database import DatabaseOptions, connect

#: The server's settings: synchronous=FULL (a commit is an fsync of the WAL).
DB_OPTIONS = DatabaseOptions()
BODY_CHARS = 200
DETAIL_CHARS = 80
MEMBERS_PER_ORG = 50
CONVERSATIONS_PER_ORG = 20
#: One audit row per this many messages.
MESSAGES_PER_AUDIT = 10
#: Rows per transaction when B loads its seed.
SEED_ROWS_PER_TRANSACTION = 1000
RECENT_ROWS = 50
AUDIT_ACTIONS = ("member.invite", "member.join", "group.create", "admin.grant", "content.hide")
#: 64-bit order-free checksum of an export.
_CHECKSUM_MOD = 1 << 64

Message = tuple[int, int, int, int, str]  # org_id, member, conv_ref, ts, body
Audit = tuple[int, int, int, str, str]  # org_id, actor, ts, action, detail

_ORG_FILE_SCHEMA = (
    "CREATE TABLE organisation (org_id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "created_at INTEGER NOT NULL)",
    "CREATE TABLE messages (msg_id INTEGER PRIMARY KEY, member INTEGER NOT NULL, "
    "conv_ref INTEGER NOT NULL, ts INTEGER NOT NULL, body TEXT NOT NULL)",
    "CREATE INDEX messages_by_ts ON messages (ts)",
    "CREATE INDEX messages_by_conv ON messages (conv_ref, ts)",
    "CREATE TABLE audit (audit_id INTEGER PRIMARY KEY, actor INTEGER NOT NULL, "
    "ts INTEGER NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL)",
    "CREATE INDEX audit_by_ts ON audit (ts)",
)
_SHARED_SCHEMA = (
    "CREATE TABLE organisations (org_id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "created_at INTEGER NOT NULL)",
    "CREATE TABLE messages (msg_id INTEGER PRIMARY KEY, org_id INTEGER NOT NULL, "
    "member INTEGER NOT NULL, conv_ref INTEGER NOT NULL, ts INTEGER NOT NULL, "
    "body TEXT NOT NULL)",
    "CREATE INDEX messages_by_org_ts ON messages (org_id, ts)",
    "CREATE INDEX messages_by_org_conv ON messages (org_id, conv_ref, ts)",
    "CREATE TABLE audit (audit_id INTEGER PRIMARY KEY, org_id INTEGER NOT NULL, "
    "actor INTEGER NOT NULL, ts INTEGER NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL)",
    "CREATE INDEX audit_by_org_ts ON audit (org_id, ts)",
)
#: B2: the same rows clustered by organisation (WITHOUT ROWID, primary key leading with
#: org_id, as storage/sqlite's org_copies is): one organisation's rows share pages.
_CLUSTERED_SCHEMA = (
    _SHARED_SCHEMA[0],
    "CREATE TABLE messages (org_id INTEGER NOT NULL, ts INTEGER NOT NULL, "
    "member INTEGER NOT NULL, conv_ref INTEGER NOT NULL, body TEXT NOT NULL, "
    "PRIMARY KEY (org_id, ts)) WITHOUT ROWID",
    "CREATE INDEX messages_by_org_conv ON messages (org_id, conv_ref, ts)",
    "CREATE TABLE audit (org_id INTEGER NOT NULL, ts INTEGER NOT NULL, "
    "actor INTEGER NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL, "
    "PRIMARY KEY (org_id, ts)) WITHOUT ROWID",
)


class LayoutCheckFailed(AssertionError):
    """A layout exported the wrong rows or left a deleted organisation's rows readable."""


def marker(org: int) -> str:
    """The text every body and audit detail of organisation ``org`` starts with."""
    return f"<o{org:06d}>"


def count_markers(paths: Iterable[Path], orgs: Iterable[int]) -> int:
    """Copies of the given organisations' rows (their markers) in the bytes of ``paths``."""
    wanted = sorted(set(orgs))
    if not wanted:
        return 0
    pattern = re.compile(b"|".join(re.escape(marker(org).encode()) for org in wanted))
    return sum(len(pattern.findall(path.read_bytes())) for path in paths if path.exists())


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file())


def _mib(n: float) -> float:
    return round(n / 2**20, 2)


def disk_usage(root: Path) -> tuple[int, int, int]:
    """Files, apparent bytes and allocated bytes (``st_blocks``) under the flat directory."""
    files = apparent = allocated = 0
    for path in _files(root):
        st = path.stat()
        files += 1
        apparent += st.st_size
        allocated += st.st_blocks * 512
    return files, apparent, allocated


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _filesystem(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (from /proc/mounts), e.g. ext4 or tmpfs."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    target = str(path.resolve())
    best: tuple[int, str] | None = None
    for fields in mounts:
        point = fields[1]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > best[0]):
            best = (len(point), fields[2])
    return None if best is None else best[1]


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every query inside sees the same state."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def _connect(path: Path) -> sqlite3.Connection:
    """The server's connection settings, and secure_delete on for every write: SQLite's default
    depends on how it was built (Debian's build turns it on, upstream's leaves it off), and a
    delete without it leaves the deleted cells, and cells that rebalancing moved, readable in
    the file."""
    conn = connect(path, DB_OPTIONS)
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def _switch_to_wal(conn: sqlite3.Connection, path: Path) -> None:
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"{path}: cannot switch to WAL mode (got {mode})")


# --- what was written, and what an export must give back -----------------------------------


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


@dataclass
class ExportTally:
    """Rows of one organisation: how many, their order-free checksum, and strays."""

    rows: int = 0
    checksum: int = 0
    #: Rows whose body does not carry the exported organisation's marker.
    foreign: int = 0

    def add(self, org: int, text: str) -> None:
        self.rows += 1
        self.checksum = (self.checksum + _crc(text)) % _CHECKSUM_MOD
        if not text.startswith(marker(org)):
            self.foreign += 1


class Ledger:
    """Rows committed per organisation (both layouts get the same): count and checksum."""

    def __init__(self) -> None:
        self._tallies: dict[int, ExportTally] = {}

    def add(self, org: int, text: str) -> None:
        self._tallies.setdefault(org, ExportTally()).add(org, text)

    def add_messages(self, rows: Iterable[Message]) -> None:
        for row in rows:
            self.add(row[0], row[4])

    def add_audits(self, rows: Iterable[Audit]) -> None:
        for row in rows:
            self.add(row[0], row[4])

    def expected(self, org: int) -> ExportTally:
        return self._tallies.get(org, ExportTally())


def _write_export(
    org: int, messages: Iterable[tuple[Any, ...]], audits: Iterable[tuple[Any, ...]], out: TextIO
) -> ExportTally:
    """Stream one organisation's rows out as JSON lines, one row in memory at a time."""
    tally = ExportTally()
    for member, conv_ref, ts, body in messages:
        out.write(
            json.dumps({"t": "message", "member": member, "conv": conv_ref, "ts": ts, "body": body})
        )
        out.write("\n")
        tally.add(org, body)
    for actor, ts, action, detail in audits:
        out.write(
            json.dumps({"t": "audit", "actor": actor, "ts": ts, "action": action, "detail": detail})
        )
        out.write("\n")
        tally.add(org, detail)
    return tally


# --- the workload ---------------------------------------------------------------------------


class Workload:
    """Deterministic rows: every body starts with its organisation's marker, time only grows."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        letters = string.ascii_lowercase + " "
        self._filler = "".join(self.rng.choice(letters) for _ in range(16384))
        self._clock = 1_700_000_000_000

    def tick(self) -> int:
        self._clock += 1
        return self._clock

    def _text(self, org: int, size: int) -> str:
        head = marker(org)
        start = self.rng.randrange(len(self._filler) - size)
        return head + self._filler[start : start + size - len(head)]

    def message(self, org: int) -> Message:
        member = self.rng.randrange(MEMBERS_PER_ORG)
        conv = self.rng.randrange(CONVERSATIONS_PER_ORG)
        return (org, member, conv, self.tick(), self._text(org, BODY_CHARS))

    def audit(self, org: int) -> Audit:
        actor = self.rng.randrange(MEMBERS_PER_ORG)
        action = self.rng.choice(AUDIT_ACTIONS)
        return (org, actor, self.tick(), action, self._text(org, DETAIL_CHARS))

    def seed_rows(self, orgs: int, per_org: int) -> tuple[list[Message], list[Audit]]:
        """Exactly ``per_org`` messages per organisation, interleaved in time as live traffic
        is; one audit row per ``MESSAGES_PER_AUDIT`` messages (at least one)."""
        audits_per_org = max(1, per_org // MESSAGES_PER_AUDIT)
        order = [org for org in range(orgs) for _ in range(per_org + audits_per_org)]
        self.rng.shuffle(order)
        left = Counter({org: audits_per_org for org in range(orgs)})
        messages: list[Message] = []
        audits: list[Audit] = []
        for org in order:
            # Audit rows first in each organisation's share of the shuffled order: any
            # deterministic split would do.
            if left[org]:
                left[org] -= 1
                audits.append(self.audit(org))
            else:
                messages.append(self.message(org))
        return messages, audits

    def batch(self, live: Sequence[int], size: int) -> list[Message]:
        return [self.message(self.rng.choice(live)) for _ in range(size)]


def _by_org(rows: Iterable[tuple[Any, ...]]) -> dict[int, list[tuple[Any, ...]]]:
    groups: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(row)
    return groups


# --- layout A: one file per organisation ----------------------------------------------------


class OrgFiles:
    """Layout A: one SQLite file per organisation, reached through an LRU of open connections.

    ``capacity`` 0 opens on demand: every use opens the file and closes it afterwards (the
    close of the last connection checkpoints the WAL into the file and unlinks it).
    """

    def __init__(self, root: Path, *, capacity: int) -> None:
        root.mkdir()
        self.root = root
        self.capacity = capacity
        self._pool: OrderedDict[int, sqlite3.Connection] = OrderedDict()
        #: Files opened so far (the churn of an LRU smaller than the active set).
        self.opens = 0

    def path(self, org: int) -> Path:
        return self.root / f"org-{org:06d}.db"

    def _paths(self, org: int) -> list[Path]:
        db = self.path(org)
        return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]

    def _open(self, org: int) -> sqlite3.Connection:
        path = self.path(org)
        if not path.exists():
            raise FileNotFoundError(f"organisation {org} has no file {path}")
        self.opens += 1
        return _connect(path)

    def _pooled(self, org: int) -> sqlite3.Connection:
        conn = self._pool.get(org)
        if conn is not None:
            self._pool.move_to_end(org)
            return conn
        conn = self._open(org)
        self._pool[org] = conn
        self._trim()
        return conn

    def _trim(self) -> None:
        while len(self._pool) > self.capacity:
            _, oldest = self._pool.popitem(last=False)
            oldest.close()

    @contextmanager
    def connection(self, org: int) -> Iterator[sqlite3.Connection]:
        if self.capacity:
            yield self._pooled(org)
            return
        conn = self._open(org)
        try:
            yield conn
        finally:
            conn.close()

    def resize(self, capacity: int) -> None:
        """Keep at most ``capacity`` connections open from now on (closing the oldest)."""
        self.capacity = capacity
        self._trim()

    def open_count(self) -> int:
        return len(self._pool)

    def create(self, org: int, created_at: int) -> None:
        path = self.path(org)
        if path.exists():
            raise FileExistsError(path)
        conn = _connect(path)
        self.opens += 1
        try:
            _switch_to_wal(conn, path)
            with _transaction(conn):
                for statement in _ORG_FILE_SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO organisation VALUES (?, ?, ?)", (org, f"org {org}", created_at)
                )
        except BaseException:
            conn.close()
            raise
        if self.capacity:
            self._pool[org] = conn
            self._trim()
        else:
            conn.close()

    def load(self, org: int, messages: Sequence[Message], audits: Sequence[Audit]) -> None:
        """One organisation's rows in one transaction."""
        with self.connection(org) as conn, _transaction(conn):
            _insert_org_messages(conn, messages)
            conn.executemany(
                "INSERT INTO audit (actor, ts, action, detail) VALUES (?, ?, ?, ?)",
                (row[1:] for row in audits),
            )

    def write(self, rows: Sequence[Message]) -> int:
        """Group commit as a writer per file does it: one transaction per touched file, one
        after the other. Returns the number of commits."""
        groups = _by_org(rows)
        for org, group in groups.items():
            with self.connection(org) as conn, _transaction(conn):
                _insert_org_messages(conn, group)
        return len(groups)

    def write_parallel(self, rows: Sequence[Message], pool: ThreadPoolExecutor) -> int:
        """The same, with the touched files' transactions run by ``pool``'s threads at once."""
        groups = _by_org(rows)
        if len(groups) > self.capacity:
            raise ValueError("parallel writes need every touched file's connection kept open")
        conns = [self._pooled(org) for org in groups]

        def commit(conn: sqlite3.Connection, group: list[tuple[Any, ...]]) -> None:
            with _transaction(conn):
                _insert_org_messages(conn, group)

        for _ in pool.map(commit, conns, groups.values()):
            pass
        return len(groups)

    def recent(self, org: int, limit: int) -> list[tuple[Any, ...]]:
        with self.connection(org) as conn:
            return conn.execute(
                "SELECT member, conv_ref, ts, body FROM messages ORDER BY ts DESC LIMIT ?",
                (limit,),
            ).fetchall()

    def export(self, org: int, out: TextIO) -> ExportTally:
        with self.connection(org) as conn, _snapshot(conn):
            messages = conn.execute("SELECT member, conv_ref, ts, body FROM messages ORDER BY ts")
            audits = conn.execute("SELECT actor, ts, action, detail FROM audit ORDER BY ts")
            return _write_export(org, messages, audits, out)

    def backup(self, org: int, dest: Path) -> None:
        """A consistent copy of one organisation's file (SQLite's online backup)."""
        with self.connection(org) as conn:
            target = sqlite3.connect(dest)
            try:
                conn.backup(target)
            finally:
                target.close()

    def rows_of(self, org: int) -> int:
        if not self.path(org).exists():
            return 0
        with self.connection(org) as conn:
            (n,) = conn.execute(
                "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM audit)"
            ).fetchone()
            return int(n)

    def delete(self, org: int) -> None:
        """Close its connection, unlink the file with its WAL and shared memory, make the
        unlink durable."""
        conn = self._pool.pop(org, None)
        if conn is not None:
            conn.close()
        for path in self._paths(org):
            path.unlink(missing_ok=True)
        _fsync_dir(self.root)

    def close(self) -> None:
        self.resize(0)


def _insert_org_messages(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO messages (member, conv_ref, ts, body) VALUES (?, ?, ?, ?)",
        (row[1:] for row in rows),
    )


# --- layout B: one shared file, rows keyed by organisation ----------------------------------


class SharedFile:
    """Layout B: one SQLite file; every row carries ``org_id``; every index leads with it.

    ``clustered`` (B2): the tables are WITHOUT ROWID with primary keys ``(org_id, ts)``, so
    one organisation's rows sit together; otherwise (B) rows sit in arrival order.
    """

    def __init__(self, root: Path, *, clustered: bool = False) -> None:
        root.mkdir()
        self.root = root
        self.path = root / "organisations.db"
        self.conn = _connect(self.path)
        try:
            _switch_to_wal(self.conn, self.path)
            with _transaction(self.conn):
                for statement in _CLUSTERED_SCHEMA if clustered else _SHARED_SCHEMA:
                    self.conn.execute(statement)
        except BaseException:
            self.conn.close()
            raise

    def create(self, org: int, created_at: int) -> None:
        with _transaction(self.conn):
            self.conn.execute(
                "INSERT INTO organisations VALUES (?, ?, ?)", (org, f"org {org}", created_at)
            )

    def _insert_messages(self, rows: Iterable[Message]) -> None:
        self.conn.executemany(
            "INSERT INTO messages (org_id, member, conv_ref, ts, body) VALUES (?, ?, ?, ?, ?)",
            rows,
        )

    def load(self, messages: Sequence[Message], audits: Sequence[Audit]) -> None:
        """Rows in arrival order, ``SEED_ROWS_PER_TRANSACTION`` to a transaction."""
        step = SEED_ROWS_PER_TRANSACTION
        for i in range(0, len(messages), step):
            with _transaction(self.conn):
                self._insert_messages(messages[i : i + step])
        for i in range(0, len(audits), step):
            with _transaction(self.conn):
                self.conn.executemany(
                    "INSERT INTO audit (org_id, actor, ts, action, detail) VALUES (?, ?, ?, ?, ?)",
                    audits[i : i + step],
                )

    def write(self, rows: Sequence[Message]) -> int:
        with _transaction(self.conn):
            self._insert_messages(rows)
        return 1

    def recent(self, org: int, limit: int) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT member, conv_ref, ts, body FROM messages WHERE org_id = ? "
            "ORDER BY ts DESC LIMIT ?",
            (org, limit),
        ).fetchall()

    def export(self, org: int, out: TextIO) -> ExportTally:
        with _snapshot(self.conn) as conn:
            messages = conn.execute(
                "SELECT member, conv_ref, ts, body FROM messages WHERE org_id = ? ORDER BY ts",
                (org,),
            )
            audits = conn.execute(
                "SELECT actor, ts, action, detail FROM audit WHERE org_id = ? ORDER BY ts",
                (org,),
            )
            return _write_export(org, messages, audits, out)

    def backup(self, dest: Path) -> None:
        target = sqlite3.connect(dest)
        try:
            self.conn.backup(target)
        finally:
            target.close()

    def rows_of(self, org: int) -> int:
        (n,) = self.conn.execute(
            "SELECT (SELECT count(*) FROM messages WHERE org_id = ?)"
            " + (SELECT count(*) FROM audit WHERE org_id = ?)"
            " + (SELECT count(*) FROM organisations WHERE org_id = ?)",
            (org, org, org),
        ).fetchone()
        return int(n)

    def delete(self, org: int, *, secure: bool = False) -> None:
        """All of one organisation's rows in one transaction; with ``secure``, SQLite
        overwrites the freed content with zeros (``PRAGMA secure_delete``)."""
        self.conn.execute(f"PRAGMA secure_delete = {'ON' if secure else 'OFF'}")
        try:
            with _transaction(self.conn):
                self.conn.execute("DELETE FROM messages WHERE org_id = ?", (org,))
                self.conn.execute("DELETE FROM audit WHERE org_id = ?", (org,))
                self.conn.execute("DELETE FROM organisations WHERE org_id = ?", (org,))
        finally:
            self.conn.execute("PRAGMA secure_delete = OFF")

    def pragma(self, name: str) -> int:
        (value,) = self.conn.execute(f"PRAGMA {name}").fetchone()
        return int(value)

    def checkpoint_truncate(self) -> None:
        busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise sqlite3.OperationalError("wal_checkpoint(TRUNCATE) could not finish")

    def vacuum(self) -> None:
        self.conn.execute("VACUUM")

    def files(self) -> list[Path]:
        return _files(self.root)

    def close(self) -> None:
        self.conn.close()


# --- one repetition -------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    orgs: int = 1000
    messages_per_org: int = 200
    batches: int = 30
    churn_batches: int = 5
    batch_size: int = 100
    threads: int = 4
    lru: int = 128
    reads: int = 200
    exports: int = 20
    deletes: int = 20
    repeat: int = 1
    seed: int = 1
    tmp_root: Path | None = None
    json_path: Path | None = None
    quiet: bool = False


def _ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def _us(ns: float) -> float:
    return round(ns / 1e3, 1)


def _mean(values: Sequence[int]) -> float:
    return sum(values) / len(values)


def _pct(values: Sequence[int], pct: float) -> int:
    value = stats.percentile(sorted(values), pct)
    if value is None:
        raise ValueError("no values")
    return int(value)


def _timed(fn: Callable[..., object], *args: Any, **kwargs: Any) -> int:
    start = time.perf_counter_ns()
    fn(*args, **kwargs)
    return time.perf_counter_ns() - start


@dataclass
class _Run:
    opts: Options
    root: Path
    work: Workload
    a: OrgFiles
    #: B and B2, by name.
    shared: dict[str, SharedFile]
    #: What every layout holds: they are all given the same rows.
    ledger: Ledger = field(default_factory=Ledger)
    live: list[int] = field(default_factory=list)
    figures: dict[str, float | int | None] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    log: TextIO = sys.stderr

    def say(self, text: str) -> None:
        if not self.opts.quiet:
            print(f"  {text}", file=self.log, flush=True)

    def sample(self, n: int) -> list[int]:
        return self.work.rng.sample(self.live, min(n, len(self.live)))

    def layouts(self) -> list[tuple[str, OrgFiles | SharedFile]]:
        return [("A", self.a), *self.shared.items()]


def _create(run: _Run) -> None:
    n = run.opts.orgs
    run.say(f"creating {n} organisations in each layout")
    for name, layout in run.layouts():
        times = [_timed(layout.create, org, run.work.tick()) for org in range(n)]
        if isinstance(layout, SharedFile):
            layout.checkpoint_truncate()
        files, _, allocated = disk_usage(layout.root)
        run.figures[f"{name}.create_ms_per_org"] = _ms(_mean(times))
        run.figures[f"{name}.files_after_create"] = files
        run.figures[f"{name}.disk_mib_after_create"] = _mib(allocated)
    run.live = list(range(n))


def _seed(run: _Run) -> None:
    opts = run.opts
    messages, audits = run.work.seed_rows(opts.orgs, opts.messages_per_org)
    run.say(f"loading {len(messages):,} messages and {len(audits):,} audit rows into each")
    msgs_by_org, audits_by_org = _by_org(messages), _by_org(audits)
    for name, layout in run.layouts():
        start = time.perf_counter_ns()
        if isinstance(layout, SharedFile):
            layout.load(messages, audits)
            layout.checkpoint_truncate()
        else:
            for org in range(opts.orgs):
                layout.load(org, msgs_by_org.get(org, []), audits_by_org.get(org, []))
        run.figures[f"{name}.seed_s"] = round((time.perf_counter_ns() - start) / 1e9, 3)
        _, apparent, allocated = disk_usage(layout.root)
        run.figures[f"{name}.disk_mib_after_seed"] = _mib(allocated)
        run.figures[f"{name}.apparent_mib_after_seed"] = _mib(apparent)
    run.ledger.add_messages(messages)
    run.ledger.add_audits(audits)
    run.figures["seed_rows"] = len(messages) + len(audits)


def _measure_writes(
    run: _Run, name: str, write: Callable[[Sequence[Message]], int], batches: list[list[Message]]
) -> None:
    latencies: list[int] = []
    commits = 0
    for rows in batches:
        start = time.perf_counter_ns()
        commits += write(rows)
        latencies.append(time.perf_counter_ns() - start)
    rows_written = sum(len(rows) for rows in batches)
    run.figures[f"{name}.rows_per_s"] = round(rows_written / (sum(latencies) / 1e9), 1)
    run.figures[f"{name}.batch_p50_ms"] = _ms(_pct(latencies, 50))
    run.figures[f"{name}.batch_p99_ms"] = _ms(_pct(latencies, 99))
    run.figures[f"{name}.commits_per_batch"] = round(commits / len(batches), 1)


def _writes(run: _Run) -> None:
    """Group commit: batches of ``batch_size`` rows over random organisations, for B, B2 and
    each of A's four ways to hold its writers (the two that reopen files, ``churn_batches``
    batches: they are slow). Every layout gets the same rows (B and B2 the batches of A's other
    variants unmeasured), so their exports compare like with like."""
    opts = run.opts
    run.say(
        f"group commit: {opts.batches} batches of {opts.batch_size} rows "
        f"({opts.churn_batches} when A reopens files)"
    )
    sizes = (opts.batches, opts.churn_batches, opts.churn_batches, opts.batches)
    sets = [[run.work.batch(run.live, opts.batch_size) for _ in range(n)] for n in sizes]
    all_open, on_demand, lru, threaded = sets
    for name, shared in run.shared.items():
        _measure_writes(run, name, shared.write, all_open)
        for rows in itertools.chain(on_demand, lru, threaded):
            shared.write(rows)

    run.a.resize(0)
    opens = run.a.opens
    _measure_writes(run, "A.on_demand", run.a.write, on_demand)
    run.figures["A.on_demand.opens_per_batch"] = round((run.a.opens - opens) / len(on_demand), 1)

    run.a.resize(opts.lru)
    for org in run.sample(opts.lru):  # start with a full pool
        with run.a.connection(org):
            pass
    opens = run.a.opens
    _measure_writes(run, f"A.lru{opts.lru}", run.a.write, lru)
    run.figures[f"A.lru{opts.lru}.opens_per_batch"] = round((run.a.opens - opens) / len(lru), 1)

    # Every organisation's writer open: what it costs to open one, and to keep 1,000 open.
    run.a.resize(0)
    fds, rss = _open_fds(), _rss_kib()
    run.a.resize(opts.orgs)
    open_ns = []
    for org in run.live:
        start = time.perf_counter_ns()
        with run.a.connection(org) as conn:
            conn.execute("SELECT org_id FROM organisation").fetchone()
        open_ns.append(time.perf_counter_ns() - start)
    run.figures["A.open_us_per_org"] = _us(_mean(open_ns))
    _measure_writes(run, "A.all_open", run.a.write, all_open)
    with ThreadPoolExecutor(max_workers=opts.threads, thread_name_prefix="org-writer") as pool:
        _measure_writes(
            run,
            f"A.all_open_{opts.threads}threads",
            lambda rows: run.a.write_parallel(rows, pool),
            threaded,
        )
    for rows in itertools.chain.from_iterable(sets):
        run.ledger.add_messages(rows)
    fds_after, rss_after = _open_fds(), _rss_kib()
    n_open = run.a.open_count()
    if fds is not None and fds_after is not None:
        run.figures["A.fds_all_open"] = fds_after - fds
    if rss is not None and rss_after is not None:
        run.figures["A.rss_kib_per_open_org"] = round((rss_after - rss) / n_open, 1)
    run.figures["A.disk_mib_all_open"] = _mib(disk_usage(run.a.root)[2])


def _reads(run: _Run, layouts: Sequence[tuple[str, OrgFiles | SharedFile]]) -> None:
    """``reads`` random organisations' most recent rows; A through its pool as it is now."""
    for name, layout in layouts:
        times = []
        for org in run.sample(run.opts.reads):
            start = time.perf_counter_ns()
            rows = layout.recent(org, RECENT_ROWS)
            times.append(time.perf_counter_ns() - start)
            if not rows or any(not row[3].startswith(marker(org)) for row in rows):
                raise LayoutCheckFailed(f"{name}: recent rows of organisation {org} are wrong")
        run.figures[f"{name}.read_recent_p50_us"] = _us(_pct(times, 50))
        run.figures[f"{name}.read_recent_p99_us"] = _us(_pct(times, 99))


def _exports(run: _Run) -> None:
    out_dir = run.root / "exports"
    out_dir.mkdir()
    orgs = run.sample(run.opts.exports)
    run.say(f"exporting {len(orgs)} organisations from each layout")
    checked: list[dict[str, Any]] = []
    for name, layout in run.layouts():
        times, rows = [], []
        for org in orgs:
            with (out_dir / f"{name}-{org:06d}.jsonl").open("w") as out:
                start = time.perf_counter_ns()
                tally = layout.export(org, out)
                out.flush()
                times.append(time.perf_counter_ns() - start)
            expected = run.ledger.expected(org)
            ok = (tally.rows, tally.checksum, tally.foreign) == (
                expected.rows,
                expected.checksum,
                0,
            )
            checked.append(
                {
                    "layout": name,
                    "org": org,
                    "ok": ok,
                    "rows": tally.rows,
                    "expected": expected.rows,
                }
            )
            if not ok:
                raise LayoutCheckFailed(f"{name}: export of org {org}: {tally} != {expected}")
            rows.append(tally.rows)
        run.figures[f"{name}.export_ms_p50"] = _ms(_pct(times, 50))
        run.figures[f"{name}.export_rows_per_org"] = round(_mean(rows), 1)
    run.checks["exports"] = checked


def _backups(run: _Run) -> None:
    """A: one organisation's file alone, and every file; B, B2: the whole shared file."""
    one_dir = run.root / "backup-one"
    one_dir.mkdir()
    one = [_timed(run.a.backup, org, one_dir / f"{org}.db") for org in run.sample(run.opts.exports)]
    run.figures["A.backup_one_org_ms_p50"] = _ms(_pct(one, 50))
    run.figures["A.backup_one_org_kib"] = round(disk_usage(one_dir)[1] / len(one) / 1024, 1)
    for p in _files(one_dir):
        p.unlink()
    for name, layout in run.layouts():
        dest = run.root / f"backup-{name}"
        dest.mkdir()
        start = time.perf_counter_ns()
        if isinstance(layout, SharedFile):
            layout.backup(dest / layout.path.name)
        else:
            for org in run.live:
                layout.backup(org, dest / layout.path(org).name)
        run.figures[f"{name}.backup_all_s"] = round((time.perf_counter_ns() - start) / 1e9, 3)


def _close_all(run: _Run) -> None:
    """Close every A writer (each close of a last connection checkpoints and drops its WAL)."""
    n = run.a.open_count()
    run.figures["A.close_us_per_org"] = _us(_timed(run.a.resize, 0) / n) if n else None


def _shared_deletes(
    run: _Run, name: str, layout: SharedFile, orgs: Sequence[int], *, secure: bool
) -> None:
    """Delete ``orgs`` one by one; count their rows' copies left in the file and WAL, then
    after a checkpoint that truncates the WAL."""
    times = [_timed(layout.delete, org, secure=secure) for org in orgs]
    rows = sum(run.ledger.expected(org).rows for org in orgs)
    run.figures[f"{name}.delete_ms_p50"] = _ms(_pct(times, 50))
    run.figures[f"{name}.delete_ms_p99"] = _ms(_pct(times, 99))
    run.figures[f"{name}.delete_us_per_row"] = round(sum(times) / 1e3 / rows, 2)
    run.figures[f"{name}.copies_left"] = count_markers(layout.files(), orgs)
    layout.checkpoint_truncate()
    run.figures[f"{name}.copies_left_checkpointed"] = count_markers(layout.files(), orgs)


def _deletes(run: _Run) -> None:
    """A deletes one set of organisations. B and B2 delete three: with secure_delete (on since
    the file was created), without it, then with it again after those plain deletes (whose
    rebalancing may have moved other organisations' rows and left the old copies behind)."""
    n = max(1, min(run.opts.deletes, len(run.live) // 3))
    doomed = run.sample(3 * n)
    secure, plain, late = doomed[:n], doomed[n : 2 * n], doomed[2 * n :]
    run.say(f"deleting {n} organisations from A, 3 x {n} from B and B2")
    run.figures["deleted_orgs_per_set"] = n

    times = [_timed(run.a.delete, org) for org in plain]
    run.figures["A.delete_ms_p50"] = _ms(_pct(times, 50))
    run.figures["A.delete_ms_p99"] = _ms(_pct(times, 99))
    run.figures["A.copies_left"] = count_markers(_files(run.a.root), plain)

    for name, layout in run.shared.items():
        layout.checkpoint_truncate()
        run.figures[f"{name}.file_mib_before_delete"] = _mib(layout.path.stat().st_size)
        _shared_deletes(run, f"{name}.secure", layout, secure, secure=True)
        _shared_deletes(run, f"{name}.plain", layout, plain, secure=False)
        run.figures[f"{name}.free_pages_after_delete"] = layout.pragma("freelist_count")
        run.figures[f"{name}.file_mib_after_delete"] = _mib(layout.path.stat().st_size)
        _shared_deletes(run, f"{name}.late_secure", layout, late, secure=True)

        vacuum_ns = _timed(layout.vacuum)
        wal = layout.path.with_name(layout.path.name + "-wal")
        run.figures[f"{name}.vacuum_wal_mib"] = _mib(wal.stat().st_size)
        ckpt_ns = _timed(layout.checkpoint_truncate)
        run.figures[f"{name}.vacuum_s"] = round((vacuum_ns + ckpt_ns) / 1e9, 3)
        run.figures[f"{name}.file_mib_after_vacuum"] = _mib(layout.path.stat().st_size)
        run.figures[f"{name}.copies_left_after_vacuum"] = count_markers(layout.files(), doomed)

    results: list[dict[str, Any]] = []
    for name, each in run.layouts():
        for org in plain if name == "A" else doomed:
            left = each.rows_of(org)
            results.append({"layout": name, "org": org, "rows_left": left})
            if left:
                raise LayoutCheckFailed(f"{name}: {left} rows of deleted organisation {org}")
        found = count_markers(_files(run.root / f"backup-{name}"), plain)
        run.figures[f"{name}.copies_in_backup"] = found
    run.checks["deletes"] = results
    dropped = set(doomed)
    run.live = [org for org in run.live if org not in dropped]


def run_once(opts: Options, log: TextIO = sys.stderr) -> dict[str, Any]:
    """One repetition in a fresh temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="rivet-org-layout-", dir=opts.tmp_root) as tmp:
        root = Path(tmp)
        shared: dict[str, SharedFile] = {}
        fds: dict[str, int] = {}
        for name, clustered in (("B", False), ("B2", True)):
            before = _open_fds()
            shared[name] = SharedFile(root / name, clustered=clustered)
            after = _open_fds()
            if before is not None and after is not None:
                fds[f"{name}.fds_all_open"] = after - before
        a = OrgFiles(root / "A", capacity=0)
        run = _Run(opts=opts, root=root, work=Workload(opts.seed), a=a, shared=shared, log=log)
        run.figures.update(fds)
        try:
            _create(run)
            _seed(run)
            _writes(run)
            _reads(run, [("A.warm", a), *shared.items()])
            _exports(run)
            _backups(run)
            _close_all(run)
            _reads(run, [("A.cold", a)])
            _deletes(run)
        finally:
            a.close()
            for layout in shared.values():
                layout.close()
        return {"figures": run.figures, "checks": run.checks}


# --- the results ----------------------------------------------------------------------------

#: (label, figure of A, figure of B and B2 without its "B." / "B2." prefix); ``{lru}`` and
#: ``{threads}`` take the options' values.
TABLE: tuple[tuple[str, str | None, str | None], ...] = (
    ("create one org (1 txn), ms", "A.create_ms_per_org", "create_ms_per_org"),
    ("files after create", "A.files_after_create", "files_after_create"),
    ("disk after create, MiB", "A.disk_mib_after_create", "disk_mib_after_create"),
    ("load seed, s (A: 1 txn/org; B: 1000 rows/txn)", "A.seed_s", "seed_s"),
    ("disk after seed, MiB", "A.disk_mib_after_seed", "disk_mib_after_seed"),
    ("group commit, rows/s (A: all open, 1 thread)", "A.all_open.rows_per_s", "rows_per_s"),
    ("  batch p50, ms", "A.all_open.batch_p50_ms", "batch_p50_ms"),
    ("  batch p99, ms", "A.all_open.batch_p99_ms", "batch_p99_ms"),
    ("  commits (WAL fsyncs) per batch", "A.all_open.commits_per_batch", "commits_per_batch"),
    ("  A, {threads} threads: rows/s", "A.all_open_{threads}threads.rows_per_s", None),
    ("  A, {threads} threads: batch p50, ms", "A.all_open_{threads}threads.batch_p50_ms", None),
    ("  A, LRU of {lru}: rows/s", "A.lru{lru}.rows_per_s", None),
    ("  A, LRU of {lru}: files opened per batch", "A.lru{lru}.opens_per_batch", None),
    ("  A, open on demand: rows/s", "A.on_demand.rows_per_s", None),
    ("open one org's file, µs", "A.open_us_per_org", None),
    ("close one org's file (checkpoint), µs", "A.close_us_per_org", None),
    ("fds with every org open", "A.fds_all_open", "fds_all_open"),
    ("RSS per open org, KiB", "A.rss_kib_per_open_org", None),
    ("disk with every org open, MiB", "A.disk_mib_all_open", None),
    ("50 recent rows of one org, p50 µs", "A.warm.read_recent_p50_us", "read_recent_p50_us"),
    ("  p99 µs", "A.warm.read_recent_p99_us", "read_recent_p99_us"),
    ("  A, open + read + close, p50 µs", "A.cold.read_recent_p50_us", None),
    ("export one org as JSON lines, p50 ms", "A.export_ms_p50", "export_ms_p50"),
    ("  rows per exported org", "A.export_rows_per_org", "export_rows_per_org"),
    ("backup one org's file, p50 ms", "A.backup_one_org_ms_p50", None),
    ("backup everything, s", "A.backup_all_s", "backup_all_s"),
    ("delete one org, p50 ms", "A.delete_ms_p50", "secure.delete_ms_p50"),
    ("  p99 ms", "A.delete_ms_p99", "secure.delete_ms_p99"),
    ("  µs per row deleted (mean)", None, "secure.delete_us_per_row"),
    ("  without secure_delete, p50 ms", None, "plain.delete_ms_p50"),
    ("file before deletes, MiB", None, "file_mib_before_delete"),
    ("  after deletes, MiB", None, "file_mib_after_delete"),
    ("  free pages after deletes", None, "free_pages_after_delete"),
    ("copies of deleted rows left in files", "A.copies_left", "secure.copies_left"),
    ("  after checkpoint(TRUNCATE)", None, "secure.copies_left_checkpointed"),
    ("  without secure_delete", None, "plain.copies_left"),
    ("    after checkpoint(TRUNCATE)", None, "plain.copies_left_checkpointed"),
    ("  secure_delete after those, checkpointed", None, "late_secure.copies_left_checkpointed"),
    ("  all three sets after VACUUM", None, "copies_left_after_vacuum"),
    ("VACUUM + checkpoint, s", None, "vacuum_s"),
    ("  WAL during VACUUM, MiB", None, "vacuum_wal_mib"),
    ("  file after VACUUM, MiB", None, "file_mib_after_vacuum"),
    ("copies of deleted rows in earlier backup", "A.copies_in_backup", "copies_in_backup"),
)
HEADERS = ("", "A: file per org", "B: shared, rowid", "B2: shared, clustered")


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _fmt(entry: dict[str, Any] | None, repeats: int) -> str:
    if entry is None:
        return "-"
    text = _number(entry["median"])
    if repeats > 1 and entry["min"] != entry["max"]:
        text += f" [{_number(entry['min'])}–{_number(entry['max'])}]"
    return text


def render(doc: dict[str, Any]) -> str:
    params = doc["parameters"]
    summary: dict[str, Any] = doc["summary"]
    repeats = len(doc["runs"])

    def cell(key: str | None) -> str:
        return _fmt(summary.get(key.format(**params)), repeats) if key else ""

    rows = [HEADERS]
    for label, a_key, shared_key in TABLE:
        b, b2 = (cell(shared_key and f"{name}.{shared_key}") for name in ("B", "B2"))
        rows.append((label.format(**params), cell(a_key), b, b2))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    spread = "median [min–max] of " if repeats > 1 else ""
    lines = [
        f"{params['orgs']:,} organisations, {params['messages_per_org']} messages each "
        f"({doc['runs'][0]['figures']['seed_rows']:,} seed rows); {spread}{repeats} run(s); "
        f"{doc['filesystem']} at {doc['tmp_root']}",
    ]
    for n, (label, *cells) in enumerate(rows):
        right = (c.rjust(w) for c, w in zip(cells, widths[1:], strict=True))
        lines.append("  ".join([label.ljust(widths[0]), *right]))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _secure_delete_default() -> int:
    """This SQLite build's own secure_delete setting (Debian's is on, upstream's off)."""
    conn = sqlite3.connect(":memory:")
    try:
        (value,) = conn.execute("PRAGMA secure_delete").fetchone()
        return int(value)
    finally:
        conn.close()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.org_layout",
        description="Measure one SQLite file per organisation against one shared file with "
        "rows keyed by organisation: create, group commit, read, export, backup, delete.",
    )
    add = p.add_argument
    add("--orgs", type=_positive_int, default=Options.orgs, help="organisations (default 1000)")
    add(
        "--messages-per-org",
        type=_positive_int,
        default=Options.messages_per_org,
        help="seed messages per organisation (default 200)",
    )
    add("--batches", type=_positive_int, default=Options.batches, help="batches per variant")
    add(
        "--churn-batches",
        type=_positive_int,
        default=Options.churn_batches,
        help="batches for A's LRU and open-on-demand variants",
    )
    add("--batch-size", type=_positive_int, default=Options.batch_size, help="rows per batch")
    add("--threads", type=_positive_int, default=Options.threads, help="A's parallel writers")
    add("--lru", type=_positive_int, default=Options.lru, help="A's LRU of open writers")
    add("--reads", type=_positive_int, default=Options.reads, help="organisations read")
    add("--exports", type=_positive_int, default=Options.exports, help="organisations exported")
    add(
        "--deletes",
        type=_positive_int,
        default=Options.deletes,
        help="organisations per delete set (at most a third of --orgs)",
    )
    add("--repeat", type=_positive_int, default=Options.repeat, help="repetitions")
    add("--seed", type=int, default=Options.seed, help="random seed of the workload")
    add("--tmp-root", type=Path, help="where the temporary directory goes (default: TMPDIR)")
    add("--json", type=Path, dest="json_path", help="results file (default: bench/results/)")
    add("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    opts = Options(**vars(args))
    if opts.orgs < 3:
        parser().error("--orgs must be at least 3 (B deletes three sets of organisations)")
    started = datetime.datetime.now(datetime.UTC)
    tmp_root = Path(opts.tmp_root or tempfile.gettempdir())
    runs = []
    for i in range(opts.repeat):
        if not opts.quiet:
            print(f"run {i + 1}/{opts.repeat}", file=sys.stderr, flush=True)
        runs.append(run_once(opts))
    doc: dict[str, Any] = {
        "schema": 1,
        "benchmark": "org_layout",
        "command": shlex.join(
            ["python", "-m", "bench.org_layout", *(sys.argv[1:] if argv is None else argv)]
        ),
        "started": started.isoformat(timespec="seconds"),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "tmp_root": str(tmp_root),
        "filesystem": _filesystem(tmp_root),
        "sqlite": sqlite3.sqlite_version,
        "sqlite_secure_delete_default": _secure_delete_default(),
        "machine": machine_info(),
        "versions": versions(),
        "runs": runs,
        "summary": stats.summarize_runs([run["figures"] for run in runs]),
    }
    json_path = opts.json_path or RESULTS_DIR / f"org_layout-{started:%Y%m%d-%H%M%S}.json"
    write_json(doc, json_path)
    print(render(doc))
    print(f"\nresults: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
