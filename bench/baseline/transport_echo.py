"""Echo over Rivet's own WebSocket transport (``server.transport``), with no features.

``python -m bench.baseline.transport_echo --port 8765``

The server left trio-websocket for a transport of its own on wsproto (one task per
connection, frames written straight to the socket). The reference of every target stays the
bare trio-websocket echo (``echo_server``); this echo shows the ceiling of the transport
Rivet now runs on, so the distance between Rivet and its own transport stays visible: the
same upgrade, ``WebSocket.receive`` and ``write_nowait`` as the gateway, and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from bench.baseline.common import parse_args, raise_nofile_limit, run_until_stopped, stop_signals
from bench.baseline.on_transport import accept_on_transport, serve_on_transport
from server.transport.websocket import ConnectionClosed


async def echo(stream: trio.abc.Stream) -> None:
    """One connection: upgrade, then every binary message back to its sender."""
    try:
        ws = await accept_on_transport(stream)
        if ws is None:
            return
        while True:
            message = await ws.receive()
            if isinstance(message, str):
                continue  # the load generator sends binary frames only
            rest = ws.write_nowait(message)
            if rest is not None:  # not taken whole: the awaited path, in order
                await ws.write(rest)
    except ConnectionClosed:
        return
    finally:
        await trio.aclose_forcefully(stream)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("echo over Rivet's own transport (Rivet bench baseline)", argv)
    raise_nofile_limit()
    stop_signals()
    return run_until_stopped(
        lambda: serve_on_transport(echo, args.host, args.port, "transport echo"),
        "transport echo",
    )


if __name__ == "__main__":
    raise SystemExit(main())
