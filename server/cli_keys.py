"""``rivet keys``: the operator's commands for the data keys and the master key (A3).

    rivet keys status --data-dir D [--master-key-file F]
    rivet keys rotate --data-dir D [--user U | --org O] [--master-key-file F]
    rivet keys rewrap --data-dir D --new-master-key-file NEW [--master-key-file OLD]

``status`` and ``rotate`` work like ``rivet users``, whether or not a server runs on the data
directory: a running server starts sealing with a rotated key at its next use reservation
(at most ``storage.sealing.LEASE`` messages of that owner later). ``rotate`` without
``--user`` or ``--org`` rotates every owner whose keys live.

``rewrap`` changes the master key: every data key is unwrapped with the old one and wrapped
with the new one (written to NEW, mode 0600, if that file does not exist). **Stop the server
first.** It can be run again after an interruption. Afterwards start the server with NEW and
destroy every copy of the old master key: backups taken before are then unreadable
(docs/encryption.md, "Backups").

The master key comes from where the server takes it (``server.encryption``). Output is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import trio

from server.app import open_stores
from server.config import Config
from server.encryption import (
    MasterKeyError,
    configured_master_key,
    read_master_key_file,
    write_master_key_file,
)
from storage.crypto import MasterKey, WrongMasterKey
from storage.keys import (
    OWNER_KINDS,
    KeysDestroyed,
    KeyStore,
    OwnerKeys,
    OwnerKind,
    org_owner,
    user_owner,
)
from storage.sealing import DataKeys, data_keys

_PAGE = 500


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="data keys and the master key (encryption at rest, A3)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    status = keys_sub.add_parser("status", help="the master key id and the data keys' use")
    rotate = keys_sub.add_parser("rotate", help="give owners a new data key")
    who = rotate.add_mutually_exclusive_group()
    who.add_argument("--user", type=int, help="only this user's key")
    who.add_argument("--org", type=int, help="only this organisation's key")
    rewrap = keys_sub.add_parser("rewrap", help="change the master key (stop the server first)")
    rewrap.add_argument(
        "--new-master-key-file",
        type=Path,
        required=True,
        help="the new master key (created, mode 0600, if the file does not exist)",
    )
    for cmd in (status, rotate, rewrap):
        cmd.add_argument("--data-dir", type=Path, default=Path("./rivet-data"))
        cmd.add_argument(
            "--master-key-file",
            type=Path,
            help="the (current) master key, if not in RIVET_MASTER_KEY, RIVET_MASTER_KEY_FILE "
            "or <data-dir>/keys/master.key",
        )


async def run(args: argparse.Namespace) -> int:
    config = Config(data_dir=args.data_dir, master_key_file=args.master_key_file)
    try:
        if args.keys_command == "rewrap":
            return await _rewrap(config, args.new_master_key_file)
        async with open_stores(config) as stores:
            keys = data_keys(stores)
            if args.keys_command == "status":
                _print(await _status(keys, keys.master_id, keys.use_limit))
                return 0
            return await _rotate(keys, args)
    except (MasterKeyError, WrongMasterKey) as error:
        print(f"rivet: {error}", file=sys.stderr)
        return 1


async def _owners(store: KeyStore, kind: OwnerKind) -> list[OwnerKeys]:
    found: list[OwnerKeys] = []
    after = ""
    while True:
        page = await store.scan(kind, after=after, limit=_PAGE)
        found.extend(page)
        if len(page) < _PAGE:
            return found
        after = page[-1].owner


async def _status(store: KeyStore, master_id: str, use_limit: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "master_key_id": master_id,
        "wrapped_by": await store.master_ids(),
        "use_limit": use_limit,
    }
    for kind in OWNER_KINDS:
        owners = await _owners(store, kind)
        live = [o for o in owners if o.destroyed_at is None]
        keys = [k for o in live for k in o.keys]
        active = [o.keys[-1] for o in live if o.keys]
        out[kind] = {
            "owners": len(live),
            "destroyed": len(owners) - len(live),
            "keys": len(keys),
            "most_used_active_fraction": max((k.reserved / use_limit for k in active), default=0),
        }
    return out


async def _rotate(keys: DataKeys, args: argparse.Namespace) -> int:
    if args.user is not None or args.org is not None:
        owner = user_owner(args.user) if args.user is not None else org_owner(args.org)
        try:
            _print({"owner": owner, "key_id": await keys.rotate(owner)})
        except KeysDestroyed:
            print(f"rivet: the keys of {owner} were destroyed", file=sys.stderr)
            return 1
        return 0
    for kind in OWNER_KINDS:
        for record in await _owners(keys, kind):
            if record.destroyed_at is None and record.keys:
                _print({"owner": record.owner, "key_id": await keys.rotate(record.owner)})
    return 0


async def _rewrap(config: Config, new_path: Path) -> int:
    found = await trio.to_thread.run_sync(configured_master_key, config)
    if found is None:
        raise MasterKeyError("the current master key is not configured")
    old = found[0]
    if await trio.Path(new_path).exists():
        new = await trio.to_thread.run_sync(read_master_key_file, new_path)
    else:
        new = MasterKey.generate()
        await trio.to_thread.run_sync(write_master_key_file, new_path, new)
    if new.key_id == old.key_id:
        raise MasterKeyError("the new master key is the current one")
    async with open_stores(config, seal=False) as stores:
        rewrapped = skipped = 0
        for kind in OWNER_KINDS:
            for record in await _owners(stores.keys, kind):
                for key in record.keys:
                    if key.master_id == new.key_id:
                        skipped += 1
                        continue
                    if key.master_id != old.key_id:
                        raise WrongMasterKey(
                            f"{key.owner}/{key.key_id} is wrapped by master key {key.master_id}, "
                            f"neither the current ({old.key_id}) nor the new one ({new.key_id})"
                        )
                    secret = old.unwrap(key.owner, key.key_id, key.wrapped)
                    if await stores.keys.rewrap(
                        key.owner,
                        key.key_id,
                        expect_master=old.key_id,
                        wrapped=new.wrap(key.owner, key.key_id, secret),
                        master_id=new.key_id,
                    ):
                        rewrapped += 1
        left = {m: n for m, n in (await stores.keys.master_ids()).items() if m != new.key_id}
    _print(
        {
            "master_key_id": new.key_id,
            "previous_master_key_id": old.key_id,
            "rewrapped": rewrapped,
            "already_rewrapped": skipped,
            "not_rewrapped": left,
            "next": f"start the server with --master-key-file {new_path} (or RIVET_MASTER_KEY), "
            "then destroy every copy of the previous master key",
        }
    )
    return 0 if not left else 1


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, sort_keys=True))
