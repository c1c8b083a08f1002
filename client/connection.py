"""One WebSocket connection to a Rivet server: request/reply by ``rid`` and a stream of
pushed events. No retries or state here; ``RivetClient`` adds those."""

from __future__ import annotations

import itertools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import trio

from client.transport import connect_websocket
from client.websocket import ClientWebSocket, ConnectionClosed
from protocol import codec
from protocol.catalog import RESULT_TYPES, AnyEvent
from protocol.replies import Error
from protocol.requests import Request

R = TypeVar("R")


class RivetError(Exception):
    """An ``error`` reply, or the connection closing before the reply came."""

    def __init__(
        self,
        code: int,
        name: str,
        message: str,
        *,
        retryable: bool,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{name} ({code}): {message}")
        self.code = code
        self.name = name
        self.message = message
        self.retryable = retryable
        self.path = path
        self.retry_after = retry_after

    @classmethod
    def from_reply(cls, error: Error) -> RivetError:
        return cls(
            error.code,
            error.name,
            error.message,
            retryable=error.retryable,
            path=error.path,
            retry_after=error.retry_after,
        )


class ConnectionLost(RivetError):
    """The connection closed; ``close_code`` says why (see the close codes)."""

    def __init__(self, close_code: int | None, reason: str | None) -> None:
        super().__init__(close_code or 1006, "connection_closed", reason or "", retryable=True)
        self.close_code = close_code


#: What ``_read`` matches to a request (a tuple: ``isinstance`` with ``A | B`` builds a union
#: object on every frame).
_REPLIES = (codec.OkFrame, Error)
#: One decoder per result type, made on first use: ``msgspec.msgpack.decode(type=...)``
#: looks the type up and sets a decoder up again on every call.
_result_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}


def _decode_result(raw: msgspec.Raw, result_type: type[R]) -> R:
    decoder = _result_decoders.get(result_type)
    if decoder is None:
        decoder = _result_decoders[result_type] = msgspec.msgpack.Decoder(result_type)
    result: R = decoder.decode(raw)
    return result


class _Pending:
    __slots__ = ("done", "frame", "result_type")

    def __init__(self, result_type: type[Any]) -> None:
        self.done = trio.Event()
        self.frame: codec.OkFrame | Error | ConnectionLost | None = None
        self.result_type = result_type


class RivetConnection:
    def __init__(self, ws: ClientWebSocket, *, max_events: int) -> None:
        self.ws = ws
        self._rids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._events_in, self.events = trio.open_memory_channel[AnyEvent](max_events)
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = trio.Event()
        # Set when we close it ourselves: the close our own ``aclose`` caused is not a close
        # by the server, so ``close_code`` keeps what it was (see ``open``).
        self._closing = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, *, max_events: int = 100_000, ssl_context: ssl.SSLContext | None = None
    ) -> AsyncIterator[RivetConnection]:
        """Connect (``ssl_context`` for ``wss://``). Errors come out as themselves (a
        ``HandshakeError`` for a network error or a refused upgrade, see
        ``client/transport.py``), not wrapped in the exception groups of the nursery
        inside."""
        ws = await connect_websocket(url, ssl_context=ssl_context)
        conn = cls(ws, max_events=max_events)
        # One nursery, one task: ``_read`` is the connection's only reader (the WebSocket
        # has no task of its own).
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn._read)
                try:
                    yield conn
                finally:
                    # Closed while ``_read`` still runs (it sees the server's answer to our
                    # close and ends); ``_closing`` keeps it from taking our close for the
                    # server's, as when it was cancelled before the close.
                    conn._closing = True
                    try:
                        await ws.aclose()
                    finally:
                        nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            error = _single(group)
            raise error from error.__cause__
        finally:
            await ws.aclose()  # no-op unless the nursery failed before the close above

    async def request(self, request: Request) -> Any:
        """Send ``request`` (its ``rid`` is replaced) and return the typed result."""
        rid = next(self._rids)
        pending = _Pending(RESULT_TYPES[type(request)])
        self._pending[rid] = pending
        try:
            if self.closed.is_set():
                raise ConnectionLost(self.close_code, self.close_reason)
            try:
                await self.ws.send_message(
                    codec.encode_request(msgspec.structs.replace(request, rid=rid))
                )
            except ConnectionClosed:
                await self.closed.wait()
                raise ConnectionLost(self.close_code, self.close_reason) from None
            await pending.done.wait()
        finally:
            self._pending.pop(rid, None)
        frame = pending.frame
        if isinstance(frame, codec.OkFrame):
            return _decode_result(frame.result, pending.result_type)
        if isinstance(frame, Error):
            raise RivetError.from_reply(frame)
        assert isinstance(frame, ConnectionLost)
        raise frame

    async def send_raw(self, data: bytes | str) -> None:
        """Send a frame as is (tests of malformed input)."""
        await self.ws.send_message(data)

    async def next_event(self) -> AnyEvent:
        return await self.events.receive()

    async def _read(self) -> None:
        """The connection's reader: each message dispatched as it is taken from the
        WebSocket, the several of one read without a task switch between them."""
        ws = self.ws
        events_in = self._events_in
        try:
            while True:
                data = await ws.get_message()
                if isinstance(data, str):
                    continue
                frame = codec.decode_server_frame(data)
                if isinstance(frame, _REPLIES):
                    rid = frame.rid
                    # Popped, not read: a close in the same read must not overwrite it.
                    pending = self._pending.pop(rid, None) if rid is not None else None
                    if pending is not None:
                        pending.frame = frame
                        pending.done.set()
                        continue
                    if not isinstance(frame, Error):
                        continue
                    # An error without a request to match (e.g. an undecodable frame) is
                    # an event.
                # Backpressure: wait for room only when ``events`` is full.
                try:
                    events_in.send_nowait(frame)  # type: ignore[arg-type]
                except trio.WouldBlock:
                    await events_in.send(frame)  # type: ignore[arg-type]
        except ConnectionClosed as closed:
            if closed.reason is not None and not self._closing:
                self.close_code = closed.reason.code
                self.close_reason = closed.reason.reason
        finally:
            self.closed.set()
            lost = ConnectionLost(self.close_code, self.close_reason)
            for pending in self._pending.values():
                pending.frame = lost
                pending.done.set()
            events_in.close()

    async def aclose(self, code: int = 1000) -> None:
        await self.ws.aclose(code)


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real exception in a group of it and cancellations, or the group itself."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        elif not isinstance(error, trio.Cancelled):
            leaves.append(error)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group
