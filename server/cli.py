"""The ``rivet`` command: serve, users, token, outbox.

``rivet serve`` starts the server; the other commands work on a data directory directly
(they open the same SQLite databases, which WAL mode lets a second process use while the
server runs) so operators can try Rivet, and tests and the bench can set up users, without
editing code.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio

from server import cli_accounts, cli_keys, cli_moderate, cli_org, collector
from server.app import RunningServer, open_stores, serve
from server.cli_ding import add_ding_flags, ding_overrides
from server.clock import SystemClock
from server.config import Config, load_config
from server.credentials import Credentials
from server.logs import setup_logging
from server.notify.outbox import outbox_path, read_outbox

log = logging.getLogger("rivet")

#: ``rivet users bulk``: users created at once (their writes share group commits).
_BULK_CONCURRENCY = 64


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the Rivet server. Flags override the TOML config file.",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="TOML config file (keys named like the flags, "
        "with underscores, at top level or under [server])",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, help="port to listen on (default 8765; 0 picks a free one)")
    p.add_argument(
        "--data-dir", type=Path, help="databases, keys and the outbox (default ./rivet-data)"
    )
    p.add_argument(
        "--master-key-file",
        type=Path,
        help="A3: file holding the master key (or RIVET_MASTER_KEY; default "
        "<data-dir>/keys/master.key, created on first start)",
    )
    p.add_argument("--store", choices=["sqlite", "memory"], help="storage backend (default sqlite)")
    p.add_argument(
        "--sqlite-synchronous",
        choices=["FULL", "NORMAL", "EXTRA"],
        help="SQLite durability (default FULL: an ack survives power loss)",
    )
    p.add_argument("--handshake-deadline", type=float, help="seconds to authenticate (default 10)")
    p.add_argument(
        "--send-queue-frames",
        type=int,
        help="frames queued per connection before closing it as slow (default 1024)",
    )
    p.add_argument(
        "--send-rate-per-second", type=float, help="C2: msg.send per user per second (default 20)"
    )
    p.add_argument("--send-burst", type=int, help="C2: msg.send burst per user (default 100)")
    p.add_argument("--group-member-limit", type=int, help="M2: members per group (default 500)")
    p.add_argument(
        "--access-token-ttl", type=float, help="access-token lifetime, seconds (default 900)"
    )
    p.add_argument("--heartbeat-seconds", type=float, help="ping interval (default 30)")
    _hardening_flags(p)
    add_ding_flags(p)
    p.add_argument("--log-format", choices=["text", "json"], help="log format (default text)")
    p.add_argument("--log-level", help="log level (default INFO)")
    p.add_argument(
        "--port-file", type=Path, help="write the bound port to this file once listening"
    )


def _hardening_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--send-queue-bytes",
        type=int,
        help="bytes queued per connection before closing it as slow (default 4194304)",
    )
    p.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        help="a browser Origin allowed to connect, e.g. https://chat.example.com (repeat it; "
        "'*' allows any). Default: none, so browser pages are refused with 403",
    )
    p.add_argument(
        "--max-connections-per-user",
        type=int,
        help="open connections per user; one more is closed with 4053 (default 16)",
    )
    p.add_argument(
        "--max-connections", type=int, help="open connections in all; past it 503 (default 10000)"
    )
    p.add_argument(
        "--request-rate-per-second",
        type=float,
        help="C2: frames per connection per second (default 200, burst 1000)",
    )
    p.add_argument(
        "--flood-strikes",
        type=int,
        help="C2: refusals in quick succession before closing with 4051 (default 50)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve /healthz and /metrics on this port (default: off; 0 picks a free one)",
    )
    p.add_argument("--metrics-host", help="address of /healthz and /metrics (default 127.0.0.1)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve wss:// directly")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument(
        "--sqlite-max-page-count",
        type=int,
        help="ceiling on each database, in pages; past it writes fail with storage_full",
    )
    p.add_argument(
        "--moderation-poll-seconds",
        type=float,
        help="C1: how often suspensions made with 'rivet moderate' reach connections (default 2)",
    )
    p.add_argument(
        "--gc-old-threshold",
        type=int,
        help="middle-generation garbage collections between two chances of a full one "
        "(default 100; CPython's own is 10)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rivet", description="Rivet messaging server")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)

    users = sub.add_parser("users", help="create or list users in a data directory")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="create a user (and print a login token)")
    create.add_argument("--data-dir", type=Path, default=Path("./rivet-data"))
    create.add_argument("--phone", required=True, help="E.164 phone number, e.g. +15550100")
    create.add_argument("--name", default="", help="display name")
    create.add_argument(
        "--token", action="store_true", help="also register a device and print tokens"
    )
    bulk = users_sub.add_parser("bulk", help="create N users with tokens, as JSON lines")
    bulk.add_argument("--data-dir", type=Path, default=Path("./rivet-data"))
    bulk.add_argument("--count", type=int, required=True)
    bulk.add_argument(
        "--phone-prefix", default="+1999", help="numbers are prefix + zero-padded index"
    )
    bulk.add_argument(
        "--out", type=Path, required=True, help="file to write, one JSON object a line"
    )

    outbox = sub.add_parser("outbox", help="show notifications sent through the outbox notifier")
    outbox.add_argument("--data-dir", type=Path, default=Path("./rivet-data"))
    outbox.add_argument("--kind", help="only this kind (login_code, push, sms, call)")
    outbox.add_argument("--phone", help="only to this phone number")
    outbox.add_argument("--last", type=int, help="only the last N")
    cli_moderate.add_parser(sub)
    cli_org.add_parser(sub)
    cli_accounts.add_parser(sub)
    cli_keys.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _cmd_serve(args)
    if args.command == "users":
        return trio.run(_cmd_users, args)
    if args.command == "moderate":
        return trio.run(cli_moderate.run, args)
    if args.command == "keys":
        return trio.run(cli_keys.run, args)
    if args.command == "org":
        return trio.run(cli_org.run, args)
    if args.command == "accounts":
        return trio.run(cli_accounts.run, args)
    if args.command == "outbox":
        for record in read_outbox(
            outbox_path(args.data_dir), kind=args.kind, phone=args.phone, last=args.last
        ):
            print(json.dumps(msgspec.to_builtins(record), ensure_ascii=False))
        return 0
    return 2


def _cmd_serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "host",
            "port",
            "data_dir",
            "store",
            "sqlite_synchronous",
            "handshake_deadline",
            "send_queue_frames",
            "send_rate_per_second",
            "send_burst",
            "group_member_limit",
            "access_token_ttl",
            "heartbeat_seconds",
            "log_format",
            "log_level",
            "send_queue_bytes",
            "allowed_origins",
            "max_connections_per_user",
            "max_connections",
            "request_rate_per_second",
            "flood_strikes",
            "metrics_port",
            "metrics_host",
            "tls_cert",
            "tls_key",
            "sqlite_max_page_count",
            "moderation_poll_seconds",
            "gc_old_threshold",
            "master_key_file",
        )
    }
    overrides.update(ding_overrides(args))
    try:
        config = load_config(args.config, **overrides)
    except (ValueError, OSError) as error:
        print(f"rivet: bad configuration: {error}", file=sys.stderr)
        return 2
    setup_logging(config)
    collector.configure(config.gc_old_threshold)
    trio.run(_run_until_signal, config, args.port_file)
    return 0


async def _run_until_signal(config: Config, port_file: Path | None) -> None:
    """SIGINT/SIGTERM: stop accepting, finish in-flight writes, close with 1001, exit 0."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running: RunningServer = await nursery.start(serve, config)
            print(f"rivet: listening on {running.url} (data in {config.data_dir})", flush=True)
            if running.metrics_port is not None:
                where = f"http://{config.metrics_host}:{running.metrics_port}"
                print(f"rivet: health and metrics at {where}/healthz, /metrics", flush=True)
            if port_file is not None:
                await trio.Path(port_file).write_text(str(running.port))
            async for signum in signals:
                log.info("signal received; shutting down", extra={"signal": signum})
                running.shutdown()
                break


async def _cmd_users(args: argparse.Namespace) -> int:
    config = Config(data_dir=args.data_dir)
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    clock = SystemClock()
    credentials = Credentials.open(config, clock)
    async with open_stores(config) as stores:
        if args.users_command == "create":
            record = await credentials.create_user(stores, phone=args.phone, display_name=args.name)
            out: dict[str, Any] = {"user_id": record.user_id, "phone": record.phone}
            if args.token:
                out.update(
                    await credentials.issue_for_new_device(stores, record, device_name="cli")
                )
            print(json.dumps(out))
            return 0
        entries: list[dict[str, Any]] = [{} for _ in range(args.count)]
        # Many users at once, so the writer's group commit pays one fsync for a batch of
        # them (one at a time, 10,000 users take minutes). Lines stay in index order.
        limiter = trio.CapacityLimiter(_BULK_CONCURRENCY)

        async def one(index: int) -> None:
            async with limiter:
                phone = f"{args.phone_prefix}{index:07d}"
                record = await credentials.create_user(
                    stores, phone=phone, display_name=f"user{index}"
                )
                entry: dict[str, Any] = {"user_id": record.user_id, "phone": phone}
                entry.update(
                    await credentials.issue_for_new_device(stores, record, device_name="bench")
                )
                entries[index] = entry

        async with trio.open_nursery() as nursery:
            for index in range(args.count):
                nursery.start_soon(one, index)
        with args.out.open("w") as handle:
            for entry in entries:
                handle.write(json.dumps(entry) + "\n")
        return 0


if __name__ == "__main__":
    sys.exit(main())
