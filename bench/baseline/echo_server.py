"""Bare trio-websocket echo server: every message goes back to its sender unchanged.

``python -m bench.baseline.echo_server --port 8765 [--fast-write]``
"""

from __future__ import annotations

from collections.abc import Sequence

from trio_websocket import ConnectionClosed, WebSocketRequest

from bench.baseline.common import Handler, serve_main
from bench.baseline.fastwrite import binary_frame, send_frame, text_frame


async def plain_echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    while True:
        try:
            message = await ws.get_message()
            await ws.send_message(message)
        except ConnectionClosed:
            return


async def fast_echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    while True:
        try:
            message = await ws.get_message()
            frame = binary_frame(message) if isinstance(message, bytes) else text_frame(message)
            await send_frame(ws, frame)
        except ConnectionClosed:
            return


def make_handler(fast_write: bool) -> Handler:
    return fast_echo if fast_write else plain_echo


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main(make_handler, "echo", argv)


if __name__ == "__main__":
    raise SystemExit(main())
