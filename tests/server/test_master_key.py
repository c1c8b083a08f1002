"""A3: where the master key comes from, and what is refused (``server.encryption``)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from server.config import Config
from server.encryption import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    MasterKeyError,
    configured_master_key,
    default_master_key_path,
    encode_master_key,
    master_key_for,
    parse_master_key,
    read_master_key_file,
    write_master_key_file,
)
from storage.crypto import MasterKey
from storage.memory.keys import MemoryKeyStore

RAW = bytes(range(32))


@pytest.fixture(autouse=True)
def no_master_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    monkeypatch.delenv(MASTER_KEY_FILE_ENV, raising=False)


def test_a3_master_keys_parse_from_base64_either_alphabet_or_raw_bytes() -> None:
    expected = MasterKey(RAW).key_id
    for data in (
        base64.b64encode(RAW),
        base64.urlsafe_b64encode(RAW),
        b"  " + base64.b64encode(RAW) + b"\n",
        RAW,
    ):
        assert parse_master_key(data, source="x").key_id == expected
    for bad in (b"not base64!", base64.b64encode(RAW[:16]), b""):
        with pytest.raises(MasterKeyError):
            parse_master_key(bad, source="x")


def test_a3_master_key_files_are_written_private_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "new" / "master.key"
    master = MasterKey.generate()
    write_master_key_file(path, master)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.read_bytes() == encode_master_key(master)
    assert read_master_key_file(path).key_id == master.key_id
    with pytest.raises(MasterKeyError, match="refusing to replace"):
        write_master_key_file(path, MasterKey.generate())
    assert read_master_key_file(path).key_id == master.key_id


def test_a3_loose_symlinked_or_missing_key_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    write_master_key_file(path, MasterKey.generate())
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(MasterKeyError, match="cannot open"):
        read_master_key_file(link)
    with pytest.raises(MasterKeyError, match="cannot open"):
        read_master_key_file(tmp_path / "missing.key")
    os.chmod(path, 0o640)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        read_master_key_file(path)
    with pytest.raises(MasterKeyError, match="regular file"):
        read_master_key_file(tmp_path)


def test_a3_the_master_key_sources_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Config(data_dir=tmp_path / "data")
    assert configured_master_key(config) is None
    default = default_master_key_path(config.data_dir)
    write_master_key_file(default, MasterKey(RAW))
    found = configured_master_key(config)
    assert found is not None and (found[0].key_id, found[1]) == (
        MasterKey(RAW).key_id,
        str(default),
    )
    outside = tmp_path / "outside.key"
    other = MasterKey.generate()
    write_master_key_file(outside, other)
    monkeypatch.setenv(MASTER_KEY_FILE_ENV, str(outside))
    found = configured_master_key(config)
    assert found is not None and found[0].key_id == other.key_id
    flag = tmp_path / "flag.key"
    third = MasterKey.generate()
    write_master_key_file(flag, third)
    found = configured_master_key(Config(data_dir=config.data_dir, master_key_file=flag))
    assert found is not None and found[0].key_id == third.key_id
    monkeypatch.delenv(MASTER_KEY_FILE_ENV)
    monkeypatch.setenv(MASTER_KEY_ENV, base64.b64encode(RAW).decode())
    found = configured_master_key(config)
    assert found is not None and (found[0].key_id, found[1]) == (
        MasterKey(RAW).key_id,
        MASTER_KEY_ENV,
    )
    with pytest.raises(MasterKeyError, match="give one"):
        configured_master_key(Config(data_dir=config.data_dir, master_key_file=flag))


async def test_a3_first_start_writes_the_key_and_later_starts_do_not(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data")
    keys = MemoryKeyStore()
    first = await master_key_for(config, keys)
    assert default_master_key_path(config.data_dir).exists()
    assert (await master_key_for(config, keys)).key_id == first.key_id
    # Keys stored but the key file gone: refused, never replaced by a new key.
    await keys.add_key("user:1", key_id=1, wrapped=b"w", master_id=first.key_id, reserved=0, now=1)
    os.unlink(default_master_key_path(config.data_dir))
    with pytest.raises(MasterKeyError, match="no master key is configured"):
        await master_key_for(config, keys)


async def test_a3_the_memory_store_uses_a_key_for_the_process(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", store="memory")
    one = await master_key_for(config, MemoryKeyStore())
    two = await master_key_for(config, MemoryKeyStore())
    assert one.key_id != two.key_id
    assert not (tmp_path / "data").exists()
