"""An abusive client, for the ``flood`` scenario: one user floods the server as fast as one
process can, and reconnects at once each time the server closes it.

    python -m bench.flooder --url ws://127.0.0.1:8765/ --token v1... --seconds 8 --out f.json

On each connection it authenticates, then sends ``ping`` ops and empty frames back to back
while a reader drains the replies (so the close code comes through); the server answers
``rate_limited`` once the connection's budget is spent and closes with 4051 (flood) when
the client keeps going (C2). The JSON summary counts frames sent, replies by outcome and
closes by code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import msgspec
import trio
import trio.lowlevel

from client.transport import open_websocket
from client.websocket import ClientWebSocket, ConnectionClosed, HandshakeError
from protocol.version import PROTOCOL_VERSION

_EMPTY = b""


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.connections = 0
        self.replies: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()

    def as_json(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "connections": self.connections,
            "replies": dict(self.replies),
            "closes": dict(self.closes),
        }


async def _read(ws: ClientWebSocket, tally: Tally, done: trio.CancelScope) -> None:
    try:
        while True:
            data = await ws.get_message()
            frame = msgspec.msgpack.decode(data.encode() if isinstance(data, str) else data)
            tally.replies["ok" if frame.get("op") == "ok" else str(frame.get("code"))] += 1
    except ConnectionClosed as closed:
        tally.closes[str(closed.reason.code if closed.reason else None)] += 1
    done.cancel()


async def _one_connection(url: str, token: str, tally: Tally) -> None:
    hello = msgspec.msgpack.encode(
        {"op": "hello", "rid": 0, "version": PROTOCOL_VERSION, "token": token}
    )
    async with open_websocket(url) as ws, trio.open_nursery() as nursery:
        tally.connections += 1
        await ws.send_message(hello)
        nursery.start_soon(_read, ws, tally, nursery.cancel_scope)
        rid = 1
        try:
            while True:
                rid += 1
                ping = {"op": "ping", "rid": rid}
                await ws.send_message(_EMPTY if rid % 4 == 0 else msgspec.msgpack.encode(ping))
                tally.sent += 1
        except ConnectionClosed:
            await trio.sleep_forever()  # the reader records the close and ends this


async def flood(url: str, token: str, seconds: float) -> Tally:
    tally = Tally()
    with trio.move_on_after(seconds):
        while True:
            try:
                await _one_connection(url, token, tally)
            except* (OSError, HandshakeError, trio.BrokenResourceError, ConnectionClosed):
                tally.closes["dropped"] += 1
            await trio.lowlevel.checkpoint()  # reconnect at once
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flooder", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    tally = trio.run(flood, args.url, args.token, args.seconds)
    args.out.write_text(json.dumps(tally.as_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
