"""The command line and serve loop shared by the bare servers."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import trio
from trio_websocket import WebSocketRequest, serve_websocket

Handler = Callable[[WebSocketRequest], Awaitable[None]]


def raise_nofile_limit() -> int:
    """Lift the soft open-file limit to the hard one; many connections need many fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def parse_args(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, required=True, help="port to bind (0: any free one)")
    parser.add_argument(
        "--fast-write",
        action="store_true",
        help="send pre-built frames straight to the socket (bench.baseline.fastwrite)",
    )
    return parser.parse_args(argv)


def stop_signals() -> None:
    """SIGINT and SIGTERM both end the server cleanly.

    A process started in the background by a non-interactive shell inherits SIGINT as
    *ignored*, and Python keeps it so; restore the default so trio turns it into
    KeyboardInterrupt, and route SIGTERM through it too.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))


def serve_main(
    make_handler: Callable[[bool], Handler], name: str, argv: Sequence[str] | None
) -> int:
    """Parse the command line and serve until SIGINT; returns the exit status."""
    args = parse_args(f"bare trio-websocket {name} server (Rivet bench baseline)", argv)
    raise_nofile_limit()
    stop_signals()
    handler = make_handler(args.fast_write)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, args.host, args.port, None)
            mode = "fast-write" if args.fast_write else "plain"
            print(f"{name} ({mode}) listening on ws://{args.host}:{server.port}", flush=True)

    return run_until_stopped(main, name)


def run_until_stopped(main: Callable[[], Awaitable[None]], name: str) -> int:
    """``trio.run(main)`` until SIGINT (how the harness stops a server); the exit status."""
    try:
        trio.run(main)
    except* KeyboardInterrupt:  # SIGINT is how the harness stops a server
        print(f"{name} stopped", file=sys.stderr, flush=True)
    return 0
