"""``rivet accounts``: P6, reclaiming dormant accounts (the platform operator's act).

    rivet accounts dormant --data-dir D [--months 12]          list them (JSON lines)
    rivet accounts reclaim --data-dir D --user U [--user U ...] [--months 12]

Accounts are not transferable; one with no sign-in for ``--months`` consecutive months (12
by default) may be reclaimed. ``reclaim`` refuses any account that is not dormant, ends its
organisation memberships, and deletes it exactly as ``account.delete`` does (A1): sessions
end, the phone number is freed, content is tombstoned, personal data erased. It works on a
data directory like ``rivet users``; a running server's clients see the tombstones on sync.

An enterprise account (P5) is its organisation's, not the platform's: ``dormant`` lists it
with its ``organisation`` so the operator can tell that organisation, and ``reclaim``
refuses it (its admins cancel it; dissolving the organisation ends it, O4).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.account_deletion import AccountEraser
from server.app import open_stores
from server.clock import SystemClock
from server.config import Config
from storage.records import Entry

MONTH_MS = 30 * 24 * 3600 * 1000


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accounts = sub.add_parser("accounts", help="dormant accounts (P6)")
    accounts_sub = accounts.add_subparsers(dest="accounts_command", required=True)
    for name, text in (("dormant", "list dormant accounts"), ("reclaim", "reclaim them")):
        cmd = accounts_sub.add_parser(name, help=text)
        cmd.add_argument("--data-dir", type=Path, default=Path("./rivet-data"))
        cmd.add_argument("--months", type=int, default=12, help="months without a sign-in")
        if name == "reclaim":
            cmd.add_argument("--user", type=int, action="append", required=True)


async def run(args: argparse.Namespace) -> int:
    clock = SystemClock()
    cutoff = clock.now_ms() - args.months * MONTH_MS
    async with open_stores(Config(data_dir=args.data_dir)) as stores:
        dormant: dict[int, int] = {}
        after = 0
        while page := await stores.personal.dormant_users(
            seen_before=cutoff, after_user=after, limit=500
        ):
            dormant.update((user.user_id, seen) for user, seen in page)
            after = page[-1][0].user_id
        if args.accounts_command == "dormant":
            for user_id, seen in sorted(dormant.items()):
                line: dict[str, int] = {"user_id": user_id, "last_sign_in": seen}
                account = await stores.orgs.account_of_user(user_id)
                if account is not None:
                    line["organisation"] = account.org_id
                print(json.dumps(line))
            return 0
        refused = [u for u in args.user if u not in dormant]
        if refused:
            print(f"rivet: not dormant for {args.months} months: {refused}", file=sys.stderr)
            return 1
        enterprise = [u for u in args.user if await stores.orgs.account_of_user(u) is not None]
        if enterprise:
            print(
                f"rivet: enterprise accounts belong to their organisation: {enterprise}"
                " (its admins cancel them)",
                file=sys.stderr,
            )
            return 1
        for user_id in args.user:
            for membership in await stores.orgs.orgs_of(user_id):
                await stores.orgs.remove_member(membership.org_id, user_id, now=clock.now_ms())
            await stores.personal.begin_deletion(user_id, now=clock.now_ms())

        async def nobody_online(entry: Entry) -> None:
            """No connections here: members see the tombstones when they sync."""

        await AccountEraser(stores, clock, publish_recall=nobody_online).finish_all()
        for user_id in args.user:
            print(json.dumps({"user_id": user_id, "reclaimed": True}))
    return 0
