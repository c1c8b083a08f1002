"""``rivet moderate``: the platform operators' moderation commands (C1).

They work on a data directory, like ``rivet users``, whether or not a server runs on it
(SQLite in WAL mode lets both write). A running server applies each act to its live
connections within ``moderation_poll_seconds`` (see ``server.moderation``). Every act is
written to the act log with the operator's name (``--operator``, default the login name)
and reason; ``rivet moderate log`` shows it. Output is JSON lines.

    rivet moderate reports [--status open|actioned|dismissed|all] [--after ID] [--limit N]
    rivet moderate hide    --conv C --seq S --reason TEXT [--report ID ...]
    rivet moderate remove  --conv C --seq S --reason TEXT [--report ID ...]
    rivet moderate suspend   --user U --reason TEXT [--report ID ...]
    rivet moderate unsuspend --user U --reason TEXT
    rivet moderate dismiss   --report ID [--report ID ...] --reason TEXT
    rivet moderate log [--after ID] [--limit N]
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from protocol.requests import Content
from server.app import open_stores
from server.clock import SystemClock
from server.config import Config
from server.moderation import ModerationError, act_on_message, dismiss, set_suspension
from storage.moderation import ActRecord, ReportRecord, ReportStatus
from storage.stores import Stores

_content = msgspec.msgpack.Decoder(Content)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    moderate = sub.add_parser(
        "moderate", help="C1: review reports, hide or remove content, suspend accounts"
    )
    commands = moderate.add_subparsers(dest="moderate_command", required=True)

    reports = _command(commands, "reports", "list users' reports, oldest first")
    reports.add_argument(
        "--status", choices=["open", "actioned", "dismissed", "all"], default="open"
    )
    reports.add_argument("--after", type=int, default=0, help="only reports with a larger id")
    reports.add_argument("--limit", type=int, default=100)

    for action, text in (
        ("hide", "withdraw a message from its conversation; the platform keeps a copy"),
        ("remove", "withdraw a message and erase every copy the platform holds"),
    ):
        act = _command(commands, action, text)
        act.add_argument("--conv", required=True, help="conversation id, e.g. g:7 or d:3:9")
        act.add_argument("--seq", type=int, required=True, help="the message's seq")
        _act_arguments(act)

    for action, text in (
        ("suspend", "suspend an account: its connections close, its logins are refused"),
        ("unsuspend", "lift a suspension"),
    ):
        act = _command(commands, action, text)
        act.add_argument("--user", type=int, required=True, help="the user id")
        _act_arguments(act)

    dismissal = _command(commands, "dismiss", "close reports without acting on them")
    _act_arguments(dismissal)

    log = _command(commands, "log", "show the act log, oldest first")
    log.add_argument("--after", type=int, default=0, help="only acts with a larger id")
    log.add_argument("--limit", type=int, default=100)


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=text, description=text)
    command.add_argument("--data-dir", type=Path, default=Path("./rivet-data"))
    return command


def _act_arguments(act: argparse.ArgumentParser) -> None:
    act.add_argument("--reason", required=True, help="why (kept in the act log)")
    act.add_argument(
        "--report", type=int, action="append", default=[], help="a report this act answers"
    )
    act.add_argument("--operator", default=None, help="who acts (default: the login name)")


async def run(args: argparse.Namespace) -> int:
    """Run one ``rivet moderate`` command; 0 on success, 1 when the act cannot be done."""
    config = Config(data_dir=args.data_dir)
    if not (config.data_dir / "personal.db").exists():
        print(f"rivet: no Rivet data in {config.data_dir}", file=sys.stderr)
        return 2
    async with open_stores(config) as stores:
        try:
            for line in await _dispatch(stores, args):
                print(json.dumps(line, ensure_ascii=False))
        except ModerationError as error:
            print(f"rivet: {error}", file=sys.stderr)
            return 1
    return 0


async def _dispatch(stores: Stores, args: argparse.Namespace) -> list[dict[str, Any]]:
    command = args.moderate_command
    if command == "reports":
        status: ReportStatus | None = None if args.status == "all" else args.status
        found = await stores.moderation.list_reports(
            status=status, after_id=args.after, limit=args.limit
        )
        return [report_json(r) for r in found]
    if command == "log":
        return [
            act_json(a) for a in await stores.moderation.acts(after_id=args.after, limit=args.limit)
        ]
    operator = args.operator or getpass.getuser()
    now = SystemClock().now_ms()
    if command in ("hide", "remove"):
        act = await act_on_message(
            stores,
            action=command,
            conv_id=args.conv,
            seq=args.seq,
            operator=operator,
            reason=args.reason,
            report_ids=args.report,
            now=now,
        )
    elif command in ("suspend", "unsuspend"):
        act = await set_suspension(
            stores,
            user_id=args.user,
            suspended=command == "suspend",
            operator=operator,
            reason=args.reason,
            report_ids=args.report,
            now=now,
        )
    else:
        act = await dismiss(
            stores, report_ids=args.report, operator=operator, reason=args.reason, now=now
        )
    return [act_json(act)]


def _text(body: bytes | None) -> str | None:
    """The text of a stored message body, for the operator's eyes."""
    if body is None:
        return None
    try:
        return _content.decode(body).text
    except msgspec.DecodeError:
        return None


def report_json(record: ReportRecord) -> dict[str, Any]:
    return {
        "report_id": record.report_id,
        "status": record.status,
        "reporter": record.reporter,
        "target_user": record.target_user,
        "conv": record.conv_id,
        "seq": record.seq,
        "reason": record.reason,
        "note": record.note,
        "evidence_text": _text(record.evidence),
        "created_at": record.created_at,
        "closed_by_act": record.closed_by_act,
    }


def act_json(record: ActRecord) -> dict[str, Any]:
    return {
        "act_id": record.act_id,
        "action": record.action,
        "operator": record.operator,
        "reason": record.reason,
        "target_user": record.target_user,
        "conv": record.conv_id,
        "seq": record.seq,
        "evidence_text": _text(record.evidence),
        "reports": list(record.report_ids),
        "created_at": record.created_at,
    }
