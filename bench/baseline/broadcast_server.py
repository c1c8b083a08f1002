"""Bare trio-websocket broadcast server: one publisher's messages go to every subscriber.

``python -m bench.baseline.broadcast_server --port 8765 [--fast-write]``

Connect to ``/sub`` to subscribe: the server sends the text message ``subscribed`` once the
connection is in the subscriber set, then every published message. Connect to ``/pub`` to
publish: each message received there is sent to every current subscriber, in turn, and then
back to the publisher as its acknowledgement (so a publisher that waits for its
acknowledgements never has more than its window of fan-outs in flight). Messages a subscriber
sends are read and dropped. Any other path is rejected with 404.
"""

from __future__ import annotations

from collections.abc import Sequence

from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from bench.baseline.common import Handler, serve_main
from bench.baseline.fastwrite import binary_frame, send_frame, text_frame

SUBSCRIBED = "subscribed"


class Broadcaster:
    """The subscriber set and the fan-out; ``fast_write`` picks the send path."""

    def __init__(self, fast_write: bool) -> None:
        self.fast_write = fast_write
        # A dict keeps insertion order, so fan-out order is subscription order.
        self.subscribers: dict[WebSocketConnection, None] = {}

    async def handle(self, request: WebSocketRequest) -> None:
        if request.path == "/sub":
            await self._subscriber(await request.accept())
        elif request.path == "/pub":
            await self._publisher(await request.accept())
        else:
            await request.reject(404)

    async def _subscriber(self, ws: WebSocketConnection) -> None:
        self.subscribers[ws] = None
        try:
            await ws.send_message(SUBSCRIBED)
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass
        finally:
            self.subscribers.pop(ws, None)

    async def _publisher(self, ws: WebSocketConnection) -> None:
        while True:
            try:
                message = await ws.get_message()
                if self.fast_write:
                    frame = (
                        binary_frame(message) if isinstance(message, bytes) else text_frame(message)
                    )
                    await self._fan_out_fast(frame)
                    await send_frame(ws, frame)
                else:
                    await self._fan_out_plain(message)
                    await ws.send_message(message)
            except ConnectionClosed:
                return

    async def _fan_out_plain(self, message: str | bytes) -> None:
        for sub in list(self.subscribers):
            try:
                await sub.send_message(message)
            except ConnectionClosed:
                self.subscribers.pop(sub, None)

    async def _fan_out_fast(self, frame: bytes) -> None:
        for sub in list(self.subscribers):
            try:
                await send_frame(sub, frame)
            except ConnectionClosed:
                self.subscribers.pop(sub, None)


def make_handler(fast_write: bool) -> Handler:
    return Broadcaster(fast_write).handle


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main(make_handler, "broadcast", argv)


if __name__ == "__main__":
    raise SystemExit(main())
