"""What the baselines over Rivet's own transport (``server.transport``) share: the upgrade,
a write, and the listener. Kept apart from ``common`` so that the trio-websocket baselines
do not import Rivet's transport (their memory figures are the reference of the targets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from protocol import limits
from server.transport.handshake import read_upgrade
from server.transport.listener import serve
from server.transport.websocket import WebSocket

#: As the gateway: the whole upgrade within this many seconds.
UPGRADE_SECONDS = 10.0


async def accept_on_transport(stream: trio.abc.Stream) -> WebSocket | None:
    """The WebSocket upgrade of ``stream`` over Rivet's own transport, accepted (None if it
    did not come within ``UPGRADE_SECONDS``)."""
    with trio.move_on_after(UPGRADE_SECONDS):
        upgrade = await read_upgrade(stream)
    if upgrade is None:
        return None
    return await upgrade.accept(max_message_size=limits.MAX_FRAME_BYTES)


async def write_on_transport(ws: WebSocket, payload: bytes) -> None:
    """``payload``'s frame straight to the socket if it takes it whole, else the awaited
    path (in order)."""
    rest = ws.write_nowait(payload)
    if rest is not None:
        await ws.write(rest)


async def serve_on_transport(
    handler: Callable[[trio.abc.Stream], Awaitable[None]], host: str, port: int, banner: str
) -> None:
    """Serve ``handler`` over Rivet's own transport (``server.transport``) until cancelled;
    prints ``banner`` and the URL once listening (the harness waits for that line)."""
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: serve(
                handler,
                host=host,
                port=port,
                tls=None,
                handler_nursery=nursery,
                task_status=task_status,
            )
        )
        print(f"{banner} listening on ws://{host}:{bound}", flush=True)
