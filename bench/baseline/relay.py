"""Rivet's ``direct`` frames with none of its features: the floor of that case on this stack.

``python -m bench.baseline.relay --port 8765 --users users.jsonl [--durable DIR]``

The ``direct`` target compares Rivet with the bare echo, which receives one frame and sends
one. Rivet's 1:1 send receives one frame and sends three: the ack to the sender, and the
``ev.message`` event to the peer and to the sender's own devices (the sending connection
included, see docs/protocol.md). This server speaks exactly that much of Rivet's protocol,
over Rivet's own transport, to the same load generator (``bench.rivet_workloads:direct``):

* ``hello`` with a token from ``--users`` (the ``rivet users bulk`` lines of the run):
  answered ``ok``; no other request is known;
* ``msg.send`` into a single chat of the connection's user: decoded and validated by
  ``protocol.codec`` as Rivet does, answered with a ``Sent`` ack, and one ``ev.message``
  frame built once and written to every connection of both users (``write_nowait``, the
  awaited write when the socket is busy), with a sequence number per conversation.

Nothing else: no authorisation beyond the token, no rate limits, no encryption at rest, no
idempotency, no read positions, no push. With ``--durable DIR`` each message is also
stored, before its ack and events, as one row of a bare table in ``DIR/relay.db`` through
Rivet's own SQLite writer (``storage.sqlite.writer``: one thread, group commit,
``synchronous=FULL``, WAL, the background checkpointer): the cheapest durable write this
stack offers. So ``relay`` is the floor of the event loop's share of ``direct``, and
``relay-durable`` the floor of a durable ``direct`` on CPython and SQLite.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import trio

from bench.baseline.common import raise_nofile_limit, run_until_stopped, stop_signals
from bench.baseline.on_transport import accept_on_transport, serve_on_transport, write_on_transport
from protocol import codec, replies
from protocol import requests as rq
from protocol.catalog import AnyRequest
from protocol.errors import ErrorCode, ProtocolError
from protocol.events import MessageEvent
from protocol.ids import conversation_kind, direct_participants
from server.transport.websocket import ConnectionClosed, WebSocket
from storage.sqlite.checkpointer import raise_automatic_checkpoint, run_checkpointer
from storage.sqlite.database import DatabaseOptions, connect
from storage.sqlite.writer import SqliteWriter, open_writer

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS messages ("
    " id INTEGER PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL,"
    " sender INTEGER NOT NULL, cmid TEXT NOT NULL, ts INTEGER NOT NULL, content BLOB NOT NULL)"
)
_INSERT = "INSERT INTO messages (conv, seq, sender, cmid, ts, content) VALUES (?, ?, ?, ?, ?, ?)"


class Relay:
    """The connections of every user, the sequence numbers, and the optional writer."""

    def __init__(self, tokens: dict[str, int], writer: SqliteWriter | None) -> None:
        self._tokens = tokens
        self._writer = writer
        self._online: defaultdict[int, list[WebSocket]] = defaultdict(list)
        self._seqs: defaultdict[str, int] = defaultdict(int)
        self._ids = itertools.count(1)

    async def handle(self, stream: trio.abc.Stream) -> None:
        """One connection: upgrade, ``hello``, then ``msg.send`` until it closes."""
        user: int | None = None
        ws: WebSocket | None = None
        try:
            ws = await accept_on_transport(stream)
            if ws is None:
                return
            while True:
                message = await ws.receive()
                if isinstance(message, str):
                    continue  # the load generator sends binary frames only
                try:
                    request = codec.decode_request(message)
                    if user is None:
                        user = await self._hello(ws, request)
                    elif isinstance(request, rq.MsgSend):
                        await self._send(ws, user, request)
                    else:
                        raise ProtocolError(ErrorCode.UNKNOWN_OP, "the relay knows msg.send only")
                except ProtocolError as error:
                    await write_on_transport(
                        ws, codec.encode_error(error, codec.request_id_of(message))
                    )
        except ConnectionClosed:
            return
        finally:
            if user is not None and ws is not None:
                self._online[user].remove(ws)
            await trio.aclose_forcefully(stream)

    async def _hello(self, ws: WebSocket, request: AnyRequest) -> int:
        if not isinstance(request, rq.Hello) or request.token is None:
            raise ProtocolError(ErrorCode.NOT_AUTHENTICATED, "hello with a token first")
        user = self._tokens.get(request.token)
        if user is None:
            raise ProtocolError(ErrorCode.AUTH_FAILED, "unknown token")
        self._online[user].append(ws)
        # The load generator reads no field of hello's result: ``Done`` stands for it.
        await write_on_transport(ws, codec.encode_ok(request.rid, replies.Done()))
        return user

    async def _send(self, ws: WebSocket, user: int, request: rq.MsgSend) -> None:
        conv = request.conv
        if conversation_kind(conv) not in ("direct", "self") or user not in (
            members := direct_participants(conv)
        ):
            raise ProtocolError(ErrorCode.FORBIDDEN, "not a single chat of yours")
        self._seqs[conv] += 1
        seq, msg_id, ts = self._seqs[conv], next(self._ids), _now_ms()
        if self._writer is not None:
            content = msgspec.msgpack.encode(request.content)
            row = (conv, seq, user, request.cmid, ts, content)
            await self._writer.run("relay", lambda conn: conn.execute(_INSERT, row))
        sent = replies.Sent(
            conv=conv, seq=seq, msg_id=msg_id, ts=ts, stream=msg_id, duplicate=False
        )
        await write_on_transport(ws, codec.encode_ok(request.rid, sent))
        event = codec.encode(
            MessageEvent(
                stream=msg_id,
                conv=conv,
                seq=seq,
                msg_id=msg_id,
                sender=user,
                ts=ts,
                cmid=request.cmid,
                content=request.content,
            )
        )
        for member in set(members):
            for target in tuple(self._online[member]):
                with contextlib.suppress(ConnectionClosed):
                    await write_on_transport(target, event)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def read_tokens(path: Path) -> dict[str, int]:
    """access token → user id, from ``rivet users bulk`` output lines."""
    tokens = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        tokens[row["access_token"]] = int(row["user_id"])
    return tokens


def _open_table(path: Path, options: DatabaseOptions) -> sqlite3.Connection:
    conn = connect(path, options)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(_SCHEMA)
    conn.execute("PRAGMA temp_store = MEMORY")  # as Rivet's writer connection
    raise_automatic_checkpoint(conn)
    return conn


@contextlib.asynccontextmanager
async def open_store(directory: Path) -> AsyncIterator[SqliteWriter]:
    """Rivet's writer and background checkpointer on ``directory/relay.db``."""
    options = DatabaseOptions()
    path = directory / "relay.db"
    conn = await trio.to_thread.run_sync(_open_table, path, options)
    async with open_writer(conn, name=path.name) as writer:
        assert options.checkpoint_interval is not None
        async with run_checkpointer(
            lambda: connect(path, options),
            lambda: writer.commits,
            name=path.name,
            lock=threading.Lock(),
            interval=options.checkpoint_interval,
        ):
            yield writer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Rivet's direct frames, no features (bench)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, required=True, help="port to bind (0: any free one)")
    parser.add_argument("--users", type=Path, required=True, help="rivet users bulk output")
    parser.add_argument("--durable", type=Path, help="store each message in DIR/relay.db first")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    stop_signals()
    tokens = read_tokens(args.users)

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            writer = None
            if args.durable is not None:
                writer = await stack.enter_async_context(open_store(args.durable))
            mode = "durable" if writer is not None else "in memory"
            relay = Relay(tokens, writer)
            await serve_on_transport(relay.handle, args.host, args.port, f"relay ({mode})")

    return run_until_stopped(run, "relay")


if __name__ == "__main__":
    raise SystemExit(main())
