"""The client transport's one reach into trio-websocket internals stays valid."""

from __future__ import annotations

import gc
import warnings
from functools import partial
from pathlib import Path

import msgspec
import trio
from trio_websocket import ConnectionClosed

from client.transport import open_websocket
from server.app import RunningServer, serve
from server.config import Config
from server.notify.memory import MemoryNotifier


async def test_server_initiated_close_leaves_no_open_socket(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = Config(port=0, store="memory", data_dir=tmp_path)
    running: RunningServer = await nursery.start(partial(serve, config, notifier=MemoryNotifier()))
    async with open_websocket(running.url) as ws:
        assert isinstance(ws._stream, trio.SocketStream)  # the private attribute we close
        await ws.send_message(msgspec.msgpack.encode({"op": "sync", "rid": 1}))
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass
    assert ws._stream.socket.fileno() == -1  # closed by us, not left to the GC
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        gc.collect()
    running.shutdown()
