"""The WebSocket gateway: upgrade, handshake deadline, one task per connection, close.

Each connection has one task of its own (``serve_connection``, started by
``server.transport.listener``): the HTTP upgrade, then the reader (frames in, through the
router, one at a time so a device's requests keep their order), then the close. It reads
the socket itself (``WebSocket.receive``: no reader task, no channel), so messages that
arrive together are handled one after another without a task switch. A writer task
(``Connection``: the bounded send queue out to the socket) runs only while frames wait in
that queue (most go straight to the socket), and one heartbeat pings every connection
(``server.heartbeat``); both live in the gateway's task nursery (``Gateway.run``, in the
app's background nursery), and a connection's writer ends before its task does. When the
reader ends, or ``Connection.close_soon`` is called, the writer stops and the socket is
closed with the requested code.

Shutdown (``Gateway.drain``): stop reading new frames on every connection, let requests in
flight finish and their replies go out, then close with 1001 (going away).
"""

from __future__ import annotations

import logging

import trio

from protocol import limits
from protocol.errors import CloseCode
from server.admission import refuse_upgrade
from server.connection import Connection
from server.context import Context
from server.heartbeat import Heartbeat
from server.metrics import METRICS
from server.router import Router
from server.services import presence, session
from server.transport import ConnectionClosed, WebSocket
from server.transport.handshake import read_upgrade
from server.transport.listener import connection_failed

log = logging.getLogger(__name__)

#: How long closing a socket may take before we drop it.
CLOSE_TIMEOUT = 2.0


class Gateway:
    def __init__(self, ctx: Context, router: Router) -> None:
        self.ctx = ctx
        self.router = router
        self._connections: set[Connection] = set()
        self._draining = False
        self._all_closed = trio.Event()
        self.accepted = 0
        #: Pings every connection; runs in ``run``'s nursery.
        self.heartbeat = Heartbeat(ctx.config)
        #: Connections' writer tasks run here (``run``).
        self._tasks: trio.Nursery | None = None

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The gateway's own tasks: the heartbeat, and connections' writers while frames
        wait. Started in the app's background nursery, before the listener."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.heartbeat.run)
            self._tasks = nursery
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._tasks = None

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """The task of one accepted connection, for its whole life: upgrade, read, close.

        Nothing escapes it but cancellation (``server.transport.listener``: one
        connection's failure must not end the others), and the stream is closed at the end
        whatever happens. The read loop is written out here rather than in helpers: an idle
        connection waits in this frame, and each coroutine between it and the wait would be
        held for the connection's life (~250 B each)."""
        try:
            try:
                ws = await self._upgrade(stream)
                if ws is None:
                    return
                config = self.ctx.config
                self.accepted += 1
                METRICS.connections_accepted.inc()
                conn = Connection(
                    ws=ws,
                    queue_frames=config.send_queue_frames,
                    queue_bytes=config.send_queue_bytes,
                )
                self._connections.add(conn)
                self.heartbeat.add(conn)
                try:
                    if self._tasks is None:
                        raise RuntimeError("the gateway is not running (Gateway.run)")
                    with trio.CancelScope() as scope:
                        # What close_soon without flush cancels, even mid-request; and what
                        # wake_reader cancels while the reader waits for a frame.
                        conn.bind(scope, self._tasks)
                        if await self._handshake(conn) and self._within_user_limit(conn):
                            first = self.ctx.hub.attach(conn)
                            if await session.revoked_while_attaching(self.ctx, conn):
                                # Closed: the loop below does not start. Never announced
                                # online, so detached now: leaving must not announce it
                                # offline (the second detach finds nothing).
                                self.ctx.hub.detach(conn)
                            elif first:
                                await presence.announce(self.ctx, conn.user_id or 0, online=True)
                            # ``_read_frame``, written out (see above) for the connection's
                            # life.
                            while not (self._draining or conn.close_request is not None):
                                if conn.queued_bytes > conn.queue_bytes:
                                    # Backpressure on replies: no next request while the
                                    # queue is over its bound (drain and close_soon end the
                                    # wait too).
                                    await conn.wait_send_room()
                                    continue
                                conn.reading = True
                                try:
                                    message = await ws.receive()
                                except ConnectionClosed:
                                    break  # the peer left, or broke the protocol
                                finally:
                                    conn.reading = False
                                if scope.cancel_called:
                                    # Woken (drain, close_soon) as the message came in: it
                                    # was never started, so never acknowledged; the client
                                    # sends it again after reconnecting.
                                    break
                                if not await self._handle(conn, message):
                                    break
                    if not conn.aborted:
                        # Reading stopped (closing, drain, or the peer left): queued
                        # replies go out first.
                        conn.finish_sending()
                        with trio.move_on_after(CLOSE_TIMEOUT):
                            await conn.wait_sent()
                finally:
                    # Nothing more is queued, and the writer (if any) ends before the task.
                    conn.finish_sending()
                    conn.stop_writer()
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                        await conn.wait_sent()
                    self.heartbeat.discard(conn)
                    self._connections.discard(conn)
                    if self._draining and not self._connections:
                        self._all_closed.set()
                    self.router.forget(conn)
                    self.ctx.org_feeds.forget(conn)
                    await self._leave(conn)
                    await self._close(ws, conn)
            finally:
                await trio.aclose_forcefully(stream)
        except* Exception as group:
            connection_failed(group)

    async def _upgrade(self, stream: trio.abc.Stream) -> WebSocket | None:
        """The HTTP upgrade (and the TLS handshake before it) within the handshake
        deadline, refused here for what ``server.admission`` decides from the request.
        ``None``: no connection (refused, not an upgrade, or too slow: the caller closes
        the stream)."""
        with trio.move_on_after(self.ctx.config.handshake_deadline):
            upgrade = await read_upgrade(stream)
            if upgrade is None:
                return None
            refusal = refuse_upgrade(
                path=upgrade.path,
                headers=upgrade.headers,
                config=self.ctx.config,
                open_connections=len(self._connections),
                draining=self._draining,
            )
            if refusal is not None:
                METRICS.upgrades_refused.inc(refusal.reason)
                await upgrade.reject(refusal.status, refusal.body)
                return None
            try:
                return await upgrade.accept(max_message_size=limits.MAX_FRAME_BYTES)
            except ConnectionClosed:
                return None  # the peer left before the 101 went out
        return None

    async def _handshake(self, conn: Connection) -> bool:
        """Read frames until the connection authenticates, within the deadline."""
        with trio.move_on_after(self.ctx.config.handshake_deadline):
            while not conn.authenticated:
                message = await self._read_frame(conn)
                if message is None or not await self._handle(conn, message):
                    return False
            return True
        conn.close_soon(CloseCode.HANDSHAKE_TIMEOUT, "authenticate in time")
        return False

    def _within_user_limit(self, conn: Connection) -> bool:
        """At most ``max_connections_per_user`` per user: one more is closed with 4053. The
        count and the hub's attach run without a checkpoint between them, so two racing
        connections cannot both take the last place."""
        limit = self.ctx.config.max_connections_per_user
        if self.ctx.hub.connection_count(conn.user_id) < limit:
            return True
        conn.close_soon(CloseCode.TOO_MANY_CONNECTIONS, f"at most {limit} connections per user")
        return False

    async def _read_frame(self, conn: Connection) -> str | bytes | None:
        """The next frame, or None when the connection should stop reading: drain, a close
        requested, or the peer gone. Used while authenticating; ``serve_connection`` has
        the same loop written out for the connection's life.

        The wait is ended by ``Connection.wake_reader``, which cancels the connection's
        scope only while ``conn.reading``: the reader checks why before every wait, and
        after it whether the scope was cancelled as the frame came in (see there)."""
        while not (self._draining or conn.close_request is not None):
            if conn.queued_bytes > conn.queue_bytes:
                await conn.wait_send_room()
                continue
            conn.reading = True
            try:
                message = await conn.ws.receive()
            except ConnectionClosed:
                return None
            finally:
                conn.reading = False
            if conn.reader_cancelled:
                return None
            return message
        return None

    async def _handle(self, conn: Connection, message: str | bytes) -> bool:
        if isinstance(message, str):
            conn.close_soon(CloseCode.UNSUPPORTED_DATA, "binary frames only")
            return False
        # Drain only ends the wait for the next frame: a request in flight finishes and is
        # replied to.
        await self.router.handle_frame(conn, message)
        return conn.close_request is None

    async def _leave(self, conn: Connection) -> None:
        if conn.user_id is None:
            return
        if self.ctx.hub.detach(conn):
            with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                scope.shield = True
                try:
                    await presence.announce(self.ctx, conn.user_id, online=False)
                except Exception:
                    log.exception("presence announcement failed")

    async def _close(self, ws: WebSocket, conn: Connection) -> None:
        request = conn.close_request
        code, reason = (request.code, request.reason) if request else (1000, "")
        if self._draining and request is None:
            code, reason = CloseCode.GOING_AWAY, "server shutting down"
        METRICS.closes.inc(code)
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            await ws.aclose(code, reason)

    def statistics(self) -> dict[str, int]:
        """Open connections and their send queues (for /metrics)."""
        queued = [conn.statistics() for conn in self._connections]
        return {
            "connections": len(queued),
            "authenticated": sum(1 for conn in self._connections if conn.authenticated),
            "queued_frames": sum(q["queued"] for q in queued),
            "queued_bytes": sum(q["queued_bytes"] for q in queued),
            "max_queued_bytes": max((q["queued_bytes"] for q in queued), default=0),
        }

    @property
    def draining(self) -> bool:
        return self._draining

    async def drain(self) -> None:
        """Stop reading, let in-flight requests finish, close every socket with 1001."""
        self._draining = True
        for conn in list(self._connections):
            if conn.close_request is None:
                conn.wake_reader()
        if not self._connections:
            self._all_closed.set()
        with trio.move_on_after(self.ctx.config.shutdown_grace_seconds):
            await self._all_closed.wait()
        for conn in list(self._connections):
            conn.close_soon(CloseCode.GOING_AWAY, "server shutting down")
