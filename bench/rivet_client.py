"""A lean Rivet protocol client for load workers: one authenticated connection, requests
matched to replies by ``rid``, everything else handed to a callback.

The load generator has one or two CPUs and must outrun the server, so frames are decoded
into ``Frame``, a flat struct with only the fields the workloads read (msgspec skips the
rest), instead of the SDK's full typed events. The catch-up scenarios use the SDK itself
(``client.RivetClient``): there the SDK's de-duplication is what is being checked.

Probes: a message's ``cmid`` is ``"<sender connection>.<n>"`` and its text starts with the
``time.monotonic_ns()`` at which it was sent, so any receiver can tell which message it got
and how long it took, without a second clock.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url
from wsproto.utilities import LocalProtocolError

from protocol import codec
from protocol import requests as rq
from protocol.version import PROTOCOL_VERSION

T = TypeVar("T")
CLIENT_QUEUE = 256


class _Content(msgspec.Struct):
    text: str = ""


class Frame(msgspec.Struct):
    """What a workload reads of a server frame: ``ok``/``error`` replies and events."""

    op: str
    rid: int | None = None
    result: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    code: int | None = None
    name: str | None = None
    message: str | None = None
    conv: str | None = None
    seq: int | None = None
    sender: int | None = None
    cmid: str | None = None
    content: _Content | None = None


_decoder = msgspec.msgpack.Decoder(Frame)


class RequestFailed(RuntimeError):
    """The server answered with an ``error`` reply."""


def probe_text(sent_ns: int, pad: str) -> str:
    return f"{sent_ns} {pad}"


def probe_sent_ns(frame: Frame) -> int:
    """The send time carried by a probe message's text."""
    assert frame.content is not None
    return int(frame.content.text.split(" ", 1)[0])


def probe_id(cmid: str) -> tuple[int, int]:
    """``(sender connection, n)`` of a probe's cmid."""
    conn, _, n = cmid.partition(".")
    return int(conn), int(n)


def padding(payload_size: int) -> str:
    """Text padding that brings a probe ``msg.send`` to about ``payload_size`` bytes."""
    return "x" * max(payload_size - 100, 0)


EventHandler = Callable[[Frame, int], None]


class _Tolerant:
    """A nursery for trio-websocket's reader task that lets a connection end alone.

    trio-websocket 0.12 answers a ping that arrives while the connection is closing, and
    wsproto raises ``LocalProtocolError`` in that task (the server pings every 30 s; long
    runs close thousands of connections at once): that would end every connection of the
    worker, not just the one closing.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: Any, name: object = None
    ) -> None:
        async def run() -> None:
            with contextlib.suppress(LocalProtocolError):
                await fn(*args)

        self._nursery.start_soon(run, name=name or fn)


class Wire:
    """One connection. ``on_event(frame, received_ns)`` gets every frame that is not the
    reply to a ``call``: events, and the replies to ``send`` (matched by the caller)."""

    def __init__(self, ws: WebSocketConnection, on_event: EventHandler | None = None) -> None:
        self.ws = ws
        self.on_event = on_event
        self._rids = itertools.count(1)
        self._calls: dict[int, list[Any]] = {}
        self.closed = trio.Event()

    @classmethod
    async def open(
        cls, nursery: trio.Nursery, url: str, token: str, on_event: EventHandler | None = None
    ) -> Wire:
        """Connect, start the reader in ``nursery``, and authenticate with ``token``."""
        ws = await connect_websocket_url(
            _Tolerant(nursery),  # type: ignore[arg-type]
            url,
            message_queue_size=CLIENT_QUEUE,
        )
        wire = cls(ws, on_event)
        nursery.start_soon(wire.read)
        try:
            await wire.call(rq.Hello(rid=0, version=PROTOCOL_VERSION, token=token))
        except BaseException:
            await trio.aclose_forcefully(ws)  # refused: the socket is not left open
            raise
        return wire

    def next_rid(self) -> int:
        """A request id for ``send``, to note before sending (the reply may come at once)."""
        return next(self._rids)

    async def send(self, request: rq.Request, rid: int) -> None:
        """Send ``request`` as ``rid`` without waiting for its reply (it goes to
        ``on_event``)."""
        await self.ws.send_message(codec.encode_request(msgspec.structs.replace(request, rid=rid)))

    async def call(self, request: rq.Request, result_type: type[T] | None = None) -> T | None:
        """Send ``request`` and wait for its reply; ``RequestFailed`` on an error reply."""
        rid = next(self._rids)
        slot: list[Any] = [trio.Event(), None]
        self._calls[rid] = slot
        try:
            await self.ws.send_message(
                codec.encode_request(msgspec.structs.replace(request, rid=rid))
            )
            await slot[0].wait()
        finally:
            self._calls.pop(rid, None)
        frame: Frame = slot[1]
        if frame.op != "ok":
            raise RequestFailed(f"{type(request).__name__}: {frame.name}: {frame.message}")
        if result_type is None:
            return None
        return msgspec.msgpack.decode(frame.result, type=result_type)

    async def read(self) -> None:
        """The reader task: until the connection closes."""
        while True:
            try:
                data = await self.ws.get_message()
            except ConnectionClosed:
                self.closed.set()
                for slot in self._calls.values():
                    slot[1] = Frame(op="error", name="connection_closed", message="closed")
                    slot[0].set()
                return
            now = time.monotonic_ns()
            if isinstance(data, str):
                raise RequestFailed("a text frame from the server")
            frame = _decoder.decode(data)
            if frame.rid is not None and frame.op in ("ok", "error"):
                waiting = self._calls.get(frame.rid)
                if waiting is not None:
                    waiting[1] = frame
                    waiting[0].set()
                    continue
            if self.on_event is not None:
                self.on_event(frame, now)
