"""C2 over a real socket: a flood gets rate_limited (with retry_after), then close 4051,
while other users keep chatting; per-user budgets for signalling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed

from client import RivetClient, RivetError
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from protocol.ids import direct_conversation_id
from server.app import RunningServer, serve
from server.notify.memory import MemoryNotifier
from tests.e2e.conftest import Harness, make_config
from tests.e2e.test_malformed import authed, raw

enc = msgspec.msgpack.encode


@pytest.fixture
async def strict(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Harness]:
    notifier = MemoryNotifier()
    config = make_config(
        tmp_path,
        request_rate_per_second=50,
        request_burst=50,
        flood_strikes=20,
        signal_rate_per_second=2,
        signal_burst=5,
    )
    running: RunningServer = await nursery.start(partial(serve, config, notifier=notifier))
    yield Harness(running, notifier)
    running.shutdown()


async def _drain(ws: object) -> tuple[list[dict[str, object]], int | None]:
    """Every frame until the server closes; and the close code."""
    got: list[dict[str, object]] = []
    with trio.fail_after(10):
        try:
            while True:
                got.append(msgspec.msgpack.decode(await ws.get_message()))  # type: ignore[attr-defined]
        except ConnectionClosed as closed:
            return got, closed.reason.code if closed.reason else None


@pytest.mark.parametrize("empty_frames", [False, True], ids=["pings", "pings-and-empty-frames"])
async def test_c2_a_flood_is_refused_then_closed_4051_and_others_chat_on(
    strict: Harness, empty_frames: bool
) -> None:
    alice, bob, mallory = [await strict.new_user() for _ in range(3)]
    conv = direct_conversation_id(alice.user_id or 0, bob.user_id or 0)
    latencies: list[float] = []
    async with (
        RivetClient.connect(strict.url, alice) as a,
        RivetClient.connect(strict.url, bob) as b,
        raw(strict.url) as evil,
    ):
        assert mallory.access_token
        await authed(strict.url, mallory.access_token, evil)

        async def flood() -> None:
            for i in range(400):
                try:
                    if empty_frames and i % 2:
                        await evil.send_message(b"")
                    else:
                        await evil.send_message(enc({"op": "ping", "rid": 100 + i}))
                except ConnectionClosed:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            for i in range(20):
                started = trio.current_time()
                ack = await a.send(conv, f"still here {i}")
                latencies.append(trio.current_time() - started)
                with trio.fail_after(5):
                    assert (await b.next_message(conv=conv)).seq == ack.seq
        frames, code = await _drain(evil)
    assert code == CloseCode.FLOOD
    errors = [f for f in frames if f["op"] == "error"]
    limited = [f for f in errors if f["code"] == ErrorCode.RATE_LIMITED]
    assert limited and all(f["retry_after"] > 0 and f["retryable"] for f in limited)
    if empty_frames:
        assert {f["code"] for f in errors} <= {ErrorCode.RATE_LIMITED, ErrorCode.MALFORMED}
    assert max(latencies) < 2.0, latencies


async def test_c2_signalling_has_a_per_user_budget(strict: Harness) -> None:
    alice, bob = await strict.new_user(), await strict.new_user()
    conv = direct_conversation_id(alice.user_id or 0, bob.user_id or 0)
    async with RivetClient.connect(strict.url, alice) as a:
        await a.send(conv, "hi")
        codes = []
        for _ in range(8):
            try:
                await a.request(rq.Typing(rid=0, conv=conv))
                codes.append(None)
            except RivetError as error:
                codes.append(error.code)
                assert error.retry_after is not None and error.retry_after > 0
        assert codes[:5] == [None] * 5
        assert codes[5:] == [ErrorCode.RATE_LIMITED] * 3
        # Other ops are not on that budget.
        assert (await a.request(rq.Sync(rid=0))).token
