"""A3: the master key, and the stores sealed under it (``docs/encryption.md``).

Where the master key comes from, first match wins:

1. ``RIVET_MASTER_KEY``: the key in base64 (32 bytes; standard or URL-safe alphabet);
2. ``master_key_file`` (``--master-key-file``), else the ``RIVET_MASTER_KEY_FILE``
   environment variable (which the other ``rivet`` commands read too): a file holding it, in
   base64 or as 32 raw bytes; a regular file of the server's user that no other user can read;
3. ``<data_dir>/keys/master.key``, the same format, if it exists;
4. on first start (no data key stored yet): a new key written to ``<data_dir>/keys/master.key``
   (mode 0600), with a warning that operators should move it out of the data directory.

Giving both 1 and 2 is refused (ambiguous). A data directory that holds data keys but no
master key is refused rather than given a new one: that would make everything unreadable.
The memory store, which keeps nothing, uses a key that lives as long as the process unless
one is given.

At start every stored data key must be wrapped by the configured master key
(``DataKeys.check_master``); otherwise the server refuses to start and says which.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import trio

from server.clock import Clock
from server.config import Config
from storage.crypto import KEY_BYTES, MasterKey
from storage.keys import KeyStore, org_owner, user_owner
from storage.sealing import data_keys, seal_stores
from storage.stores import Stores

log = logging.getLogger(__name__)

MASTER_KEY_ENV: Final = "RIVET_MASTER_KEY"
MASTER_KEY_FILE_ENV: Final = "RIVET_MASTER_KEY_FILE"
MASTER_KEY_FILE: Final = "master.key"
_KEYS_DIR: Final = "keys"
_TMP_PREFIX: Final = ".master-tmp-"
#: The line logged when a master key is generated inside the data directory.
MOVE_OUT_WARNING: Final = (
    "generated a new master key in {path}: move it out of the data directory (give it with "
    "RIVET_MASTER_KEY or --master-key-file) so that backups of the data directory are "
    "unreadable without it"
)


class MasterKeyError(Exception):
    """The master key cannot be loaded as configured; the server must not start."""


def default_master_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / _KEYS_DIR / MASTER_KEY_FILE


def parse_master_key(data: bytes, *, source: str) -> MasterKey:
    """32 raw bytes, or their base64 (either alphabet, surrounding whitespace ignored)."""
    if len(data) == KEY_BYTES:
        return MasterKey(data)
    text = data.strip()
    try:
        raw = base64.b64decode(text.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{source} is not a base64 master key") from None
    if len(raw) != KEY_BYTES:
        raise MasterKeyError(f"{source} holds {len(raw)} bytes; a master key is {KEY_BYTES}")
    return MasterKey(raw)


def encode_master_key(master: MasterKey) -> bytes:
    return base64.b64encode(master.secret) + b"\n"


def read_master_key_file(path: Path) -> MasterKey:
    """The key in ``path``: a regular file (no symlink) of this user, mode 0600 or stricter."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise MasterKeyError(f"cannot open the master key file {path}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MasterKeyError(f"{path} must be a regular file")
        if info.st_uid != os.geteuid():
            raise MasterKeyError(f"{path} is owned by uid {info.st_uid}, not this server's user")
        if info.st_mode & 0o077:
            raise MasterKeyError(
                f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, which other users can "
                f"reach; run: chmod 600 {path}"
            )
        data = os.read(fd, 256)
    finally:
        os.close(fd)
    return parse_master_key(data, source=str(path))


def write_master_key_file(path: Path, master: MasterKey) -> None:
    """Write ``master`` to ``path`` (mode 0600, durably); refuses to replace a file."""
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)
    if path.exists():
        raise MasterKeyError(f"{path} exists; refusing to replace a master key")
    tmp = directory / f"{_TMP_PREFIX}{path.name}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(encode_master_key(master))
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.link(tmp, path)  # fails if someone created ``path`` meanwhile: never replaced
    os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(Path(directory).resolve())


def configured_master_key(config: Config) -> tuple[MasterKey, str] | None:
    """The master key given by the environment, the config or the data directory, with
    where it came from; None if none is given."""
    env = os.environ.get(MASTER_KEY_ENV)
    file = config.master_key_file
    if file is None and os.environ.get(MASTER_KEY_FILE_ENV):
        file = Path(os.environ[MASTER_KEY_FILE_ENV])
    if env and file is not None:
        raise MasterKeyError(
            f"the master key is given both by {MASTER_KEY_ENV} and as a file; give one"
        )
    if env:
        return parse_master_key(env.encode(), source=MASTER_KEY_ENV), MASTER_KEY_ENV
    if file is not None:
        return read_master_key_file(file), str(file)
    if config.store == "sqlite":
        default = default_master_key_path(config.data_dir)
        if default.exists() or default.is_symlink():
            return read_master_key_file(default), str(default)
    return None


async def master_key_for(config: Config, keys: KeyStore) -> MasterKey:
    """The master key to run with (module doc); creates one on a first start."""
    found = await trio.to_thread.run_sync(configured_master_key, config)
    if found is not None:
        master, source = found
        in_file = source != MASTER_KEY_ENV
        if (
            in_file
            and config.store == "sqlite"
            and await trio.to_thread.run_sync(_inside, Path(source), config.data_dir)
        ):
            log.warning(
                "the master key is inside the data directory: backups of it are readable",
                extra={"path": source},
            )
        return master
    if config.store == "memory":
        return MasterKey.generate()
    if await keys.master_ids():
        raise MasterKeyError(
            f"{config.data_dir} holds data keys but no master key is configured: give it with "
            f"{MASTER_KEY_ENV} or --master-key-file (generating a new one would make every "
            "stored message unreadable)"
        )
    master = MasterKey.generate()
    path = default_master_key_path(config.data_dir)
    await trio.to_thread.run_sync(write_master_key_file, path, master)
    log.warning(MOVE_OUT_WARNING.format(path=path), extra={"master_key_id": master.key_id})
    return master


async def sealed(config: Config, stores: Stores, **options: Any) -> Stores:
    """``stores`` with content sealed under the configured master key (A3); refuses a
    master key that did not wrap the stored data keys."""
    master = await master_key_for(config, stores.keys)
    result = seal_stores(stores, master, **options)
    await data_keys(result).check_master()
    return result


async def destroy_user_keys(keys: KeyStore, clock: Clock, user_id: int) -> int:
    """A1: the account's content in every store becomes unreadable, now and in backups
    once the master key they were taken under is retired (docs/encryption.md)."""
    return await keys.destroy(user_owner(user_id), now=clock.now_ms())


async def destroy_org_keys(keys: KeyStore, clock: Clock, org_id: int) -> int:
    """O4: the organisation's copies become unreadable (see ``destroy_user_keys``)."""
    return await keys.destroy(org_owner(org_id), now=clock.now_ms())


def org_keys_destroyer(keys: KeyStore, clock: Clock) -> Callable[[int], Awaitable[None]]:
    """The dissolution job's hook (``server.dissolution.OnDissolved``): destroy the keys of
    a dissolving organisation (idempotent, so a resumed job may call it again)."""

    async def destroy(org_id: int) -> None:
        gone = await destroy_org_keys(keys, clock, org_id)
        log.info("organisation keys destroyed", extra={"org_id": org_id, "keys": gone})

    return destroy
