"""A tiny HTTP/1.1 server for operators: ``GET /healthz`` and ``GET /metrics`` on their own port.

It is not the WebSocket port: probes and scrapers never compete with clients for the
handshake, and the port can stay on loopback (the default host) while clients come in on
another interface. h11 (already installed with wsproto) does the parsing, sans-I/O; this
module only moves bytes. One request per connection (``Connection: close``), read within
``REQUEST_TIMEOUT`` seconds and ``MAX_REQUEST_BYTES`` of head, so a stuck or hostile client
holds a socket for a few seconds at most.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import h11
import trio

from server.metrics import METRICS, render

log = logging.getLogger(__name__)

#: Seconds a client has to send its request and read the answer.
REQUEST_TIMEOUT = 5.0
#: Largest request head accepted (the request line and headers).
MAX_REQUEST_BYTES = 16 * 1024
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


#: A route answers from the server's current state; called once per request.
Route = Callable[[], Response]


async def serve_ops_http(
    host: str,
    port: int,
    routes: Mapping[str, Route],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` (path -> route) on ``host:port`` until cancelled; ``task_status``
    gets the bound port (useful with port 0)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.info("operations endpoint listening", extra={"host": host, "port": bound})
    task_status.started(bound)
    await trio.serve_listeners(partial(_handle, routes=routes), listeners)


async def _handle(stream: trio.SocketStream, *, routes: Mapping[str, Route]) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    try:
        with trio.move_on_after(REQUEST_TIMEOUT):
            try:
                request = await _read_request(stream, conn)
            except h11.RemoteProtocolError:
                await _send(stream, conn, Response(400, b"bad request\n"))
                return
            if request is not None:
                head = request.method == b"HEAD"
                await _send(stream, conn, _answer(request, routes), head=head)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        pass
    finally:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await stream.aclose()


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(4096))
        elif isinstance(event, h11.Request):
            return event
        else:
            return None  # the client closed before sending a request


def _answer(request: h11.Request, routes: Mapping[str, Route]) -> Response:
    if request.method not in (b"GET", b"HEAD"):
        return Response(405, b"method not allowed\n")
    path = request.target.decode("ascii", "replace").split("?", 1)[0]
    route = routes.get(path)
    if route is None:
        return Response(404, b"not found\n")
    return route()


async def _send(
    stream: trio.SocketStream, conn: h11.Connection, response: Response, *, head: bool = False
) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("connection", "close"),
        ("cache-control", "no-store"),
    ]
    data = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if not head:  # an answer to HEAD has the headers of the GET answer and no body
        data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


class GatewayView(Protocol):
    """What the routes read from the gateway."""

    @property
    def draining(self) -> bool: ...

    def statistics(self) -> dict[str, int]: ...


#: More gauges for ``/metrics``, read at each scrape: name -> (help, value).
ExtraGauges = Callable[[], Mapping[str, tuple[str, float]]]


def server_routes(
    gateway: GatewayView,
    extra_gauges: ExtraGauges | None = None,
    problems: Callable[[], list[str]] | None = None,
) -> dict[str, Route]:
    """``/healthz``: 200 ``ok`` while serving, 503 ``draining`` during shutdown (take the
    instance out of rotation), 503 ``unavailable`` with one line per problem while
    ``problems`` (the stores') reports any (restart the instance). ``/metrics``: the
    Prometheus text of ``server.metrics``, the gateway's gauges and ``extra_gauges`` (the
    DING machinery's, from the app)."""

    def healthz() -> Response:
        if gateway.draining:
            return Response(503, b"draining\n")
        found = problems() if problems is not None else []
        if found:
            return Response(503, "".join(f"unavailable: {p}\n" for p in found).encode())
        return Response(200, b"ok\n")

    def metrics() -> Response:
        stats = gateway.statistics()
        gauges: dict[str, tuple[str, float]] = {
            "connections": ("Open WebSocket connections.", stats["connections"]),
            "authenticated_connections": (
                "Open connections that have authenticated.",
                stats["authenticated"],
            ),
            "send_queue_frames": (
                "Frames queued to clients, all connections together.",
                stats["queued_frames"],
            ),
            "send_queue_bytes": (
                "Bytes queued to clients, all connections together.",
                stats["queued_bytes"],
            ),
            "send_queue_bytes_max": (
                "Bytes queued to the connection with the longest queue.",
                stats["max_queued_bytes"],
            ),
        }
        if extra_gauges is not None:
            gauges.update(extra_gauges())
        return Response(200, render(METRICS, gauges).encode(), PROMETHEUS_TEXT)

    return {"/healthz": healthz, "/metrics": metrics}
