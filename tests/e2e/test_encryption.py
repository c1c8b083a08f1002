"""A3 end to end: what is on disk, what destroying keys erases, and what backups hold.

Each scenario runs the real server (SQLite) over WebSockets, with the master key kept outside
the data directory as docs/encryption.md tells operators to, and reads the database files
directly to see what is stored.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from client import RivetError
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.ids import direct_conversation_id
from server import cli, cli_keys
from server.app import open_stores
from server.config import Config
from server.encryption import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    MasterKeyError,
    default_master_key_path,
    encode_master_key,
    write_master_key_file,
)
from storage.crypto import MasterKey, WrongMasterKey
from storage.keys import user_owner
from tests.e2e.orgs_world import World, open_world, texts
from tests.e2e.processes import RIVET

ALICE_SAYS = "alice-plaintext-7f3a9c"
BOB_SAYS = "bob-plaintext-51e2d0"
ALICE_TO_ORG = "alice-consented-c0ffee"


def files_of(data_dir: Path, database: str) -> list[Path]:
    """The database file and its write-ahead log (and shared-memory index) as on disk."""
    return sorted(data_dir.glob(f"{database}*"))


def assert_nowhere(data_dir: Path, *texts: str) -> None:
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            for text in texts:
                assert text.encode() not in data, f"{text!r} is readable in {path.name}"


def key_text(path: Path) -> str:
    return path.read_text().strip()


def stored_bodies(path: Path, sql: str) -> list[bytes]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute(sql) if row[0] is not None]
    finally:
        conn.close()


async def history_texts(world: World, name: str, conv: str) -> list[tuple[str | None, bool]]:
    page = await world.call(name, rq.MsgHistory(rid=0, conv=conv))
    return [(m.content.text if m.content else None, m.recalled) for m in page.messages]


@pytest.fixture
def master_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The master key in a file outside the data directory, given to every `rivet` command
    through RIVET_MASTER_KEY_FILE."""
    path = tmp_path / "secrets" / "master.key"
    write_master_key_file(path, MasterKey.generate())
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    monkeypatch.setenv(MASTER_KEY_FILE_ENV, str(path))
    return path


async def build(world: World) -> tuple[str, int]:
    """alice and bob chat; alice consented for Acme, so her later message is copied."""
    for name in ("admin", "alice", "bob"):
        await world.user(name)
    conv = direct_conversation_id(world.uid("alice"), world.uid("bob"))
    await world.say("alice", conv, ALICE_SAYS)
    await world.say("bob", conv, BOB_SAYS)
    org = await world.create_org("admin", "Acme")
    await world.join(org, "admin", "alice")
    await world.consent("alice", org, True)
    await world.say("alice", conv, ALICE_TO_ORG)
    await world.settle()
    return conv, org


async def test_a3_bodies_are_unreadable_in_the_database_files(
    tmp_path: Path, master_file: Path
) -> None:
    data = tmp_path / "data"
    async with open_world(tmp_path, "sqlite") as world:
        conv, org = await build(world)
        # The server shows everything as written...
        assert await history_texts(world, "bob", conv) == [
            (ALICE_SAYS, False),
            (BOB_SAYS, False),
            (ALICE_TO_ORG, False),
        ]
        assert await texts(world, "admin", org) == [ALICE_TO_ORG]
        # ...while the files hold none of it: not the rows, not the write-ahead log.
        bodies = stored_bodies(data / "cross.db", "SELECT body FROM entries WHERE kind='message'")
        assert len(bodies) == 3 and all(body[0] == 1 for body in bodies)  # envelope v1
        copies = stored_bodies(data / "organisations.db", "SELECT body FROM org_copies")
        assert len(copies) == 1
        for body in [*bodies, *copies]:
            for text in (ALICE_SAYS, BOB_SAYS, ALICE_TO_ORG):
                assert text.encode() not in body
        assert files_of(data, "cross.db") and files_of(data, "organisations.db")
        assert_nowhere(data, ALICE_SAYS, BOB_SAYS, ALICE_TO_ORG)
    assert_nowhere(data, ALICE_SAYS, BOB_SAYS, ALICE_TO_ORG)
    # The master key is where the operator put it, not in the data directory.
    assert not default_master_key_path(data).exists()
    assert_nowhere(data, key_text(master_file))


async def test_a1_a3_destroyed_keys_erase_a_users_words_and_old_backups_go_with_the_master(
    tmp_path: Path, master_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    backup = tmp_path / "backup"
    async with open_world(tmp_path, "sqlite") as world:
        conv, org = await build(world)
        users = dict(world.users)
        alice = world.uid("alice")
    # A backup of the data directory, taken (with the server stopped) before the deletion.
    shutil.copytree(data, backup)

    async with open_world(tmp_path, "sqlite") as world:
        world.users.update(users)
        await world.server.ctx.stores.keys.destroy(user_owner(alice), now=world.clock.now_ms())
        # A1: alice's words are erased for everyone; bob's stay; the seqs stay as tombstones.
        assert await history_texts(world, "bob", conv) == [
            (None, True),
            (BOB_SAYS, False),
            (None, True),
        ]
        # Organisations' copies are sealed with the organisation's key: they stay (A1).
        assert await texts(world, "admin", org) == [ALICE_TO_ORG]
        # Nothing can be sealed for alice any more: her sends fail, nothing is stored.
        with pytest.raises(RivetError) as refused:
            await world.say("alice", conv, "after deletion")
        assert refused.value.code == ErrorCode.INTERNAL
        assert len(await history_texts(world, "bob", conv)) == 3

    # The backup holds alice's wrapped keys: with the master key it was taken under, it is
    # still readable (docs/encryption.md, "Backups")...
    async with open_stores(Config(data_dir=backup)) as stores:
        entry = await stores.cross.get_entry(conv, 1)
        assert entry is not None and ALICE_SAYS.encode() in (entry.body or b"")
    # ...and without a master key it is not: nothing in its files reads, and it will not open.
    assert_nowhere(backup, ALICE_SAYS, BOB_SAYS, ALICE_TO_ORG)
    monkeypatch.delenv(MASTER_KEY_FILE_ENV)
    with pytest.raises(MasterKeyError):
        async with open_stores(Config(data_dir=backup)):
            pass

    # The operator changes the master key and destroys the old one: from then on the backup
    # taken before the deletion is unreadable too.
    new_master = tmp_path / "secrets" / "master-2.key"
    args = cli.build_parser().parse_args(
        [
            "keys",
            "rewrap",
            "--data-dir",
            str(data),
            "--master-key-file",
            str(master_file),
            "--new-master-key-file",
            str(new_master),
        ]
    )
    assert await cli_keys.run(args) == 0
    os.unlink(master_file)
    monkeypatch.setenv(MASTER_KEY_FILE_ENV, str(new_master))
    with pytest.raises(WrongMasterKey):
        async with open_stores(Config(data_dir=backup)):
            pass
    # The live data directory runs on the new key: bob's words open, alice's stay erased.
    async with open_world(tmp_path, "sqlite") as world:
        world.users.update(users)
        assert await history_texts(world, "bob", conv) == [
            (None, True),
            (BOB_SAYS, False),
            (None, True),
        ]
        assert await texts(world, "admin", org) == [ALICE_TO_ORG]


async def test_a3_a_first_start_generates_the_master_key_and_a_missing_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    monkeypatch.delenv(MASTER_KEY_FILE_ENV, raising=False)
    data = tmp_path / "data"
    async with open_world(tmp_path, "sqlite") as world:
        await world.user("alice")
        conv = direct_conversation_id(world.uid("alice"), world.uid("alice"))
        await world.say("alice", conv, ALICE_SAYS)
    generated = default_master_key_path(data)
    assert generated.stat().st_mode & 0o777 == 0o600
    assert "move it out of the data directory" in caplog.text
    # The operator moves it out (as the log line says): the server refuses to start without
    # it rather than make a new key, and starts with it given.
    outside = tmp_path / "master.key"
    shutil.move(generated, outside)
    with pytest.raises(MasterKeyError, match="no master key is configured"):
        async with open_stores(Config(data_dir=data)):
            pass
    monkeypatch.setenv(MASTER_KEY_ENV, key_text(outside))
    async with open_stores(Config(data_dir=data)) as stores:
        entry = await stores.cross.get_entry(conv, 1)
        assert entry is not None and ALICE_SAYS.encode() in (entry.body or b"")
    # Both ways at once is ambiguous; a key file others can read is refused.
    with pytest.raises(MasterKeyError, match="give one"):
        async with open_stores(Config(data_dir=data, master_key_file=outside)):
            pass
    monkeypatch.delenv(MASTER_KEY_ENV)
    os.chmod(outside, 0o644)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        async with open_stores(Config(data_dir=data, master_key_file=outside)):
            pass


def test_a3_rivet_keys_status_and_rotate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, MASTER_KEY_ENV: encode_master_key(MasterKey.generate()).decode()}
    env.pop(MASTER_KEY_FILE_ENV, None)
    subprocess.run(
        [*RIVET, "users", "create", "--data-dir", str(data), "--phone", "+15550100"],
        check=True,
        capture_output=True,
        env=env,
        timeout=60,
    )

    def keys(*argv: str) -> list[dict[str, object]]:
        done = subprocess.run(
            [*RIVET, "keys", *argv, "--data-dir", str(data)],
            check=True,
            capture_output=True,
            env=env,
            timeout=60,
        )
        return [json.loads(line) for line in done.stdout.splitlines()]

    assert keys("rotate", "--user", "1") == [{"owner": "user:1", "key_id": 1}]
    assert keys("rotate", "--user", "1") == [{"owner": "user:1", "key_id": 2}]
    assert keys("rotate") == [{"owner": "user:1", "key_id": 3}]
    (status,) = keys("status")
    assert status["user"] == {
        "owners": 1,
        "destroyed": 0,
        "keys": 3,
        "most_used_active_fraction": pytest.approx(4096 / 2**31),
    }
    assert status["wrapped_by"] == {status["master_key_id"]: 3}
