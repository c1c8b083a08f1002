"""A local HTTP gateway for webhook tests: a trio server on 127.0.0.1 (h11) that records
every request, and can answer the first ones with an error or not at all."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import h11
import trio


@dataclass
class Received:
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Gateway:
    """Answers 200, except: the first ``fail`` requests get ``fail_status``, and the first
    ``hang`` requests (after those) get no answer at all."""

    fail: int = 0
    fail_status: int = 503
    hang: int = 0
    received: list[Received] = field(default_factory=list)
    port: int = 0
    arrived: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def wait_for(self, count: int) -> list[Received]:
        while len(self.received) < count:
            self.arrived = trio.Event()
            await self.arrived.wait()
        return self.received

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(our_role=h11.SERVER)
        request: h11.Request | None = None
        body = b""
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(bytes(data))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert request is not None
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            self.received.append(Received(request.target.decode(), headers, body))
            self.arrived.set()
            if self.fail:
                self.fail -= 1
                status = self.fail_status
            elif self.hang:
                self.hang -= 1
                await trio.sleep_forever()
            else:
                status = 200
            response = h11.Response(
                status_code=status, headers=[("Content-Length", "2"), ("Connection", "close")]
            )
            await stream.send_all(conn.send(response) + conn.send(h11.Data(data=b"ok")))
            await stream.send_all(conn.send(h11.EndOfMessage()))
