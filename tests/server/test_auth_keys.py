"""Server keys on disk: creation, modes, rotation, refusal of loose permissions (A2, A3)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from server.auth.keys import (
    InsecureKeyStore,
    KeyStoreError,
    ServerKeys,
    key_id,
    keys_dir,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable: modes must be set explicitly."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_a2_first_start_creates_keys_dir_0700_and_files_0600(
    tmp_path: Path, loose_umask: None
) -> None:
    keys = ServerKeys.open(tmp_path / "data")
    directory = keys_dir(tmp_path / "data")
    assert keys.directory == directory
    assert mode(directory) == 0o700
    names = sorted(os.listdir(directory))
    assert names == ["active", "ed25519-" + keys.active_kid + ".key", "mac.key"]
    for name in names:
        assert mode(directory / name) == 0o600, name
    assert len(keys.mac_key) == 32
    assert (directory / "mac.key").read_bytes() == keys.mac_key
    assert (directory / "active").read_text() == keys.active_kid


def test_reopening_loads_the_same_keys(tmp_path: Path) -> None:
    first = ServerKeys.open(tmp_path)
    signature = first.sign(b"hello")
    again = ServerKeys.open(tmp_path)
    assert again.active_kid == first.active_kid
    assert again.mac_key == first.mac_key
    public = again.public_key(first.active_kid)
    assert public is not None
    public.verify(signature, b"hello")


def test_rotate_keeps_old_public_keys_and_deletes_old_private_key(tmp_path: Path) -> None:
    keys = ServerKeys.open(tmp_path)
    old_kid = keys.active_kid
    old_signature = keys.sign(b"before")
    new_kid = keys.rotate()
    directory = keys_dir(tmp_path)

    assert keys.active_kid == new_kid != old_kid
    assert set(keys.kids) == {old_kid, new_kid}
    assert not (directory / f"ed25519-{old_kid}.key").exists()
    assert mode(directory / f"ed25519-{old_kid}.pub") == 0o600
    assert mode(directory / f"ed25519-{new_kid}.key") == 0o600

    reopened = ServerKeys.open(tmp_path)
    assert reopened.active_kid == new_kid
    assert set(reopened.kids) == {old_kid, new_kid}
    old_public = reopened.public_key(old_kid)
    assert old_public is not None
    old_public.verify(old_signature, b"before")
    assert reopened.mac_key == keys.mac_key  # rotation never touches the MAC key


def test_ephemeral_keys_rotate_in_memory() -> None:
    keys = ServerKeys.ephemeral()
    assert keys.directory is None
    old = keys.active_kid
    new = keys.rotate()
    assert keys.kids == tuple(sorted({old, new}))
    assert keys.public_key("0" * 12) is None


def test_a2_repr_shows_no_secret(tmp_path: Path) -> None:
    keys = ServerKeys.open(tmp_path)
    text = repr(keys)
    assert keys.active_kid in text
    assert keys.mac_key.hex() not in text
    assert repr(keys.mac_key) not in text


@pytest.mark.parametrize("name", ["mac.key", "active", "key"])
@pytest.mark.parametrize("loose", [0o640, 0o604, 0o620])
def test_a2_refuses_key_files_other_users_can_reach(tmp_path: Path, name: str, loose: int) -> None:
    keys = ServerKeys.open(tmp_path)
    filename = f"ed25519-{keys.active_kid}.key" if name == "key" else name
    path = keys_dir(tmp_path) / filename
    os.chmod(path, loose)
    with pytest.raises(InsecureKeyStore, match="chmod 600"):
        ServerKeys.open(tmp_path)


def test_a2_refuses_a_readable_old_public_key(tmp_path: Path) -> None:
    """A writable .pub would let someone plant a verification key and forge tokens."""
    keys = ServerKeys.open(tmp_path)
    old = keys.active_kid
    keys.rotate()
    os.chmod(keys_dir(tmp_path) / f"ed25519-{old}.pub", 0o666)
    with pytest.raises(InsecureKeyStore):
        ServerKeys.open(tmp_path)


def test_a2_refuses_a_keys_dir_other_users_can_reach(tmp_path: Path) -> None:
    ServerKeys.open(tmp_path)
    os.chmod(keys_dir(tmp_path), 0o755)
    with pytest.raises(InsecureKeyStore, match="chmod 700"):
        ServerKeys.open(tmp_path)


def test_a2_refuses_key_files_owned_by_another_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ServerKeys.open(tmp_path)
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1)
    with pytest.raises(InsecureKeyStore, match="owned by uid"):
        ServerKeys.open(tmp_path)


def test_a2_refuses_a_symlinked_key_file(tmp_path: Path) -> None:
    ServerKeys.open(tmp_path)
    directory = keys_dir(tmp_path)
    outside = tmp_path / "elsewhere"
    os.replace(directory / "mac.key", outside)
    os.symlink(outside, directory / "mac.key")
    with pytest.raises(KeyStoreError):
        ServerKeys.open(tmp_path)


def test_a3_refuses_a_key_file_whose_content_does_not_match_its_kid(tmp_path: Path) -> None:
    keys = ServerKeys.open(tmp_path)
    directory = keys_dir(tmp_path)
    impostor = "0123456789ab"
    os.replace(directory / f"ed25519-{keys.active_kid}.key", directory / f"ed25519-{impostor}.key")
    (directory / "active").write_text(impostor)
    with pytest.raises(KeyStoreError, match="kid mismatch"):
        ServerKeys.open(tmp_path)


def test_a3_refuses_a_truncated_mac_key(tmp_path: Path) -> None:
    ServerKeys.open(tmp_path)
    path = keys_dir(tmp_path) / "mac.key"
    path.write_bytes(b"short")
    with pytest.raises(KeyStoreError, match="32 bytes"):
        ServerKeys.open(tmp_path)


def test_a3_missing_mac_key_next_to_signing_keys_is_an_error_not_a_new_key(
    tmp_path: Path,
) -> None:
    ServerKeys.open(tmp_path)
    os.unlink(keys_dir(tmp_path) / "mac.key")
    with pytest.raises(KeyStoreError, match="restore it"):
        ServerKeys.open(tmp_path)


def test_a3_missing_active_key_is_an_error(tmp_path: Path) -> None:
    keys = ServerKeys.open(tmp_path)
    os.unlink(keys_dir(tmp_path) / f"ed25519-{keys.active_kid}.key")
    with pytest.raises(KeyStoreError, match="no private key file"):
        ServerKeys.open(tmp_path)


def test_a3_finishes_an_interrupted_first_start(tmp_path: Path) -> None:
    """A crash after mac.key and the private key were written, before ``active``."""
    first = ServerKeys.open(tmp_path)
    directory = keys_dir(tmp_path)
    os.unlink(directory / "active")
    (directory / ".tmp-active").write_bytes(b"half")  # a write that never got renamed
    recovered = ServerKeys.open(tmp_path)
    assert recovered.active_kid == first.active_kid
    assert recovered.mac_key == first.mac_key
    assert not (directory / ".tmp-active").exists()


def test_a3_first_start_after_only_the_mac_key_was_written(tmp_path: Path) -> None:
    first = ServerKeys.open(tmp_path)
    directory = keys_dir(tmp_path)
    os.unlink(directory / "active")
    os.unlink(directory / f"ed25519-{first.active_kid}.key")
    recovered = ServerKeys.open(tmp_path)
    assert recovered.mac_key == first.mac_key
    assert (directory / f"ed25519-{recovered.active_kid}.key").exists()


def write_0600(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_a3_a_stray_private_key_from_an_interrupted_rotation_is_demoted(tmp_path: Path) -> None:
    """Crash after the new key was written, before ``active`` pointed at it."""
    keys = ServerKeys.open(tmp_path)
    directory = keys_dir(tmp_path)
    stray = Ed25519PrivateKey.generate()
    stray_kid = key_id(stray.public_key())
    raw = stray.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    write_0600(directory / f"ed25519-{stray_kid}.key", raw)

    recovered = ServerKeys.open(tmp_path)
    assert recovered.active_kid == keys.active_kid
    assert set(recovered.kids) == {keys.active_kid, stray_kid}
    assert not (directory / f"ed25519-{stray_kid}.key").exists()
    assert mode(directory / f"ed25519-{stray_kid}.pub") == 0o600


def test_a3_finishes_a_rotation_interrupted_before_the_old_key_was_demoted(
    tmp_path: Path,
) -> None:
    """Crash after ``active`` named the new key, before the old private key was deleted."""
    keys = ServerKeys.open(tmp_path)
    directory = keys_dir(tmp_path)
    old_kid = keys.active_kid
    old_raw = (directory / f"ed25519-{old_kid}.key").read_bytes()
    old_signature = keys.sign(b"old")
    new_kid = keys.rotate()
    os.unlink(directory / f"ed25519-{old_kid}.pub")
    write_0600(directory / f"ed25519-{old_kid}.key", old_raw)

    recovered = ServerKeys.open(tmp_path)
    assert recovered.active_kid == new_kid
    assert not (directory / f"ed25519-{old_kid}.key").exists()
    old_public = recovered.public_key(old_kid)
    assert old_public is not None
    old_public.verify(old_signature, b"old")
