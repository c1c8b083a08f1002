"""``rivet org``: the platform operator's organisation commands, and an admin's export.

    rivet org verify   --data-dir D --org N        P2: verify (names unique among verified)
    rivet org unverify --data-dir D --org N
    rivet org verify-person --data-dir D --org N --account NAME [--undo]
                                                   O3: real-person verification of an
                                                   enterprise account (the default Verifier)
    rivet org export   --url ws://... --token-file F --org N --out FILE [--format jsonl|msgpack]
                       [--member U] [--from MS] [--to MS]

``verify`` works on a data directory like ``rivet users`` (the server may be running).
``export`` is an admin path: it connects as the admin (the token is read from a file or
``RIVET_TOKEN``, never given on the command line or in the URL) and pages through
``admin.export``, so the router's policy gate decides what the admin may take (D5). It
streams to the file and shows its progress on standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import msgspec
import trio

from client import ClientState, RivetClient, RivetError
from protocol import orgs as po
from server.app import open_stores
from server.clock import SystemClock
from server.config import Config
from storage.errors import AlreadyExists


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    org = sub.add_parser("org", help="organisation commands (verification, export)")
    org_sub = org.add_subparsers(dest="org_command", required=True)
    for name, text in (("verify", "verify an organisation (P2)"), ("unverify", "withdraw it")):
        cmd = org_sub.add_parser(name, help=text)
        cmd.add_argument("--data-dir", type=Path, default=Path("./rivet-data"))
        cmd.add_argument("--org", type=int, required=True)
    person = org_sub.add_parser(
        "verify-person", help="O3: mark an enterprise account's person as verified"
    )
    person.add_argument("--data-dir", type=Path, default=Path("./rivet-data"))
    person.add_argument("--org", type=int, required=True)
    person.add_argument("--account", required=True, help="the enterprise account's name")
    person.add_argument("--undo", action="store_true", help="remove the verification instead")
    export = org_sub.add_parser("export", help="export an organisation's data as its admin")
    export.add_argument("--url", required=True, help="the server, e.g. ws://127.0.0.1:8765/")
    export.add_argument(
        "--token-file", type=Path, help="file holding the admin's access token (or RIVET_TOKEN)"
    )
    export.add_argument("--org", type=int, required=True)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--format", choices=["jsonl", "msgpack"], default="jsonl")
    export.add_argument("--member", type=int, help="only this member's copies")
    export.add_argument("--from", dest="from_ts", type=int, help="from this time (ms, inclusive)")
    export.add_argument("--to", dest="to_ts", type=int, help="up to this time (ms, exclusive)")


async def run(args: argparse.Namespace) -> int:
    if args.org_command == "export":
        return await _export(args)
    if args.org_command == "verify-person":
        return await _verify_person(args)
    config = Config(data_dir=args.data_dir)
    async with open_stores(config) as stores:
        try:
            org = await stores.orgs.set_verified(
                args.org, verified=args.org_command == "verify", now=SystemClock().now_ms()
            )
        except KeyError:
            print(f"rivet: no organisation {args.org}", file=sys.stderr)
            return 1
        except AlreadyExists:
            print("rivet: a verified organisation already has this name (P2)", file=sys.stderr)
            return 1
    print(json.dumps(msgspec.to_builtins(org)))
    return 0


async def _verify_person(args: argparse.Namespace) -> int:
    """O3, the default ``Verifier``: the operator checked the person out of band. A running
    server sees the change within its cache's lifetime (``server.enterprise``)."""
    async with open_stores(Config(data_dir=args.data_dir)) as stores:
        account = await stores.orgs.get_account(args.org, args.account)
        if account is None:
            print(f"rivet: no account {args.account!r} in organisation {args.org}", file=sys.stderr)
            return 1
        account = await stores.orgs.set_person_verified(
            args.org, account.user_id, verified=not args.undo
        )
    info = msgspec.to_builtins(account)
    info.pop("password_hash", None)
    print(json.dumps(info))
    return 0


async def _export(args: argparse.Namespace) -> int:
    token = os.environ.get("RIVET_TOKEN")
    if args.token_file is not None:
        token = (await trio.Path(args.token_file).read_text()).strip()
    if not token:
        print("rivet: give the admin's token with --token-file or RIVET_TOKEN", file=sys.stderr)
        return 2
    encoder = msgspec.json.Encoder() if args.format == "jsonl" else msgspec.msgpack.Encoder()
    written = 0
    try:
        async with (
            RivetClient.connect(args.url, ClientState(access_token=token)) as admin,
            await trio.open_file(args.out, "wb") as out,
        ):
            after = 0
            while True:
                page: po.CopyPage = await admin.request(
                    po.AdminExport(
                        rid=0,
                        org=args.org,
                        member=args.member,
                        from_ts=args.from_ts,
                        to_ts=args.to_ts,
                        after=after,
                    )
                )
                for copy in page.copies:
                    data = encoder.encode(copy)
                    await out.write(data + b"\n" if args.format == "jsonl" else data)
                written += len(page.copies)
                print(f"\rexported {written} messages", end="", file=sys.stderr, flush=True)
                if page.next_after is None:
                    break
                after = page.next_after
    except RivetError as error:
        print(
            f"\nrivet: export refused: {error.name} ({error.code}): {error.message}",
            file=sys.stderr,
        )
        return 1
    print(f"\rexported {written} messages to {args.out}", file=sys.stderr)
    return 0
